//! TCP proxies that stand in for network links, so tests can cut or slow
//! the link between two real processes.
//!
//! A [`Proxy`] listens on a 127.0.0.1 port the system picks (so no other
//! test can take it between choosing and binding) and forwards each
//! connection to its target. [`Proxy::cut`] closes every open connection and refuses new
//! ones (a partition); [`Proxy::black_hole`] keeps every connection open
//! and accepts new ones but delivers nothing, as a host that vanished
//! without a word (a dead link, a dropped route); [`Proxy::heal`] opens the
//! link again;
//! [`Proxy::delay`] holds every chunk of data for a while before passing it
//! on (a slow link: each read waits, so it also caps throughput);
//! [`Proxy::latency`] delivers every byte a fixed time after it arrived
//! without limiting throughput (a distant link: a round trip costs twice
//! the latency, a stream does not). Dropping the proxy stops it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Link {
    cut: AtomicBool,
    /// Data in either direction is swallowed; nothing is closed.
    black_hole: AtomicBool,
    stopped: AtomicBool,
    delay: Mutex<Duration>,
    /// One-way latency of connections opened from now on.
    latency: Mutex<Duration>,
    /// Both ends of every open connection, to close them on a cut.
    open: Mutex<Vec<TcpStream>>,
}

pub struct Proxy {
    pub port: u16,
    link: Arc<Link>,
}

impl Proxy {
    /// Listens on a free 127.0.0.1 port and forwards to 127.0.0.1:`target`.
    pub fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind a proxy port");
        let port = listener.local_addr().expect("proxy port").port();
        let link = Arc::new(Link::default());
        let target: SocketAddr = ([127, 0, 0, 1], target).into();
        let shared = link.clone();
        std::thread::spawn(move || accept(listener, target, shared));
        Proxy { port, link }
    }

    /// `127.0.0.1:PORT` of the proxy.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn cut(&self) {
        self.link.cut.store(true, Ordering::SeqCst);
        for stream in self.link.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    pub fn black_hole(&self) {
        self.link.black_hole.store(true, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.link.cut.store(false, Ordering::SeqCst);
        self.link.black_hole.store(false, Ordering::SeqCst);
    }

    pub fn delay(&self, by: Duration) {
        *self.link.delay.lock().unwrap() = by;
    }

    /// Connections opened from now on carry each byte `by` late, each way.
    pub fn latency(&self, by: Duration) {
        *self.link.latency.lock().unwrap() = by;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.link.stopped.store(true, Ordering::SeqCst);
        // Wake the accepting thread so it sees the flag and ends.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn accept(listener: TcpListener, target: SocketAddr, link: Arc<Link>) {
    for incoming in listener.incoming() {
        if link.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = incoming else { continue };
        if link.cut.load(Ordering::SeqCst) {
            continue; // dropped: the caller sees the connection closed
        }
        if link.black_hole.load(Ordering::SeqCst) {
            // Accepted, then never answered: the caller waits.
            let held = link.clone();
            std::thread::spawn(move || swallow(client, held));
            continue;
        }
        let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else { continue };
        let _ = (client.set_nodelay(true), server.set_nodelay(true));
        let ends = [client.try_clone(), server.try_clone(), client.try_clone(), server.try_clone()];
        let [Ok(c1), Ok(s1), Ok(c2), Ok(s2)] = ends else { continue };
        link.open.lock().unwrap().extend([c2, s2]);
        let (up, down) = (link.clone(), link.clone());
        let latency = *link.latency.lock().unwrap();
        if latency.is_zero() {
            std::thread::spawn(move || pump(client, server, up));
            std::thread::spawn(move || pump(s1, c1, down));
        } else {
            std::thread::spawn(move || late(client, server, latency));
            std::thread::spawn(move || late(s1, c1, latency));
        }
    }
}

/// Copies `from` to `to` until either closes or the link is cut.
fn pump(mut from: TcpStream, mut to: TcpStream, link: Arc<Link>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let delay = *link.delay.lock().unwrap();
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        if link.black_hole.load(Ordering::SeqCst) {
            continue;
        }
        if link.cut.load(Ordering::SeqCst) || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// Copies `from` to `to`, each piece `latency` after it arrived: a reader
/// timestamps what it reads, a writer holds each piece until it is due.
fn late(mut from: TcpStream, mut to: TcpStream, latency: Duration) {
    let (tx, rx) = std::sync::mpsc::channel::<(std::time::Instant, Vec<u8>)>();
    let writer = std::thread::spawn(move || {
        for (due, data) in rx {
            std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
            if to.write_all(&data).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        if tx.send((std::time::Instant::now() + latency, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.join();
    let _ = from.shutdown(Shutdown::Both);
}

/// Reads and drops whatever arrives on a black-holed connection, until it
/// closes or the link stops.
fn swallow(mut from: TcpStream, link: Arc<Link>) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = vec![0u8; 64 * 1024];
    while !link.stopped.load(Ordering::SeqCst) {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn forwards_then_cuts_then_heals() {
        let echo = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let target = echo.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut s in echo.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut b = [0u8; 5];
                    while s.read_exact(&mut b).is_ok() && s.write_all(&b).is_ok() {}
                });
            }
        });
        let proxy = Proxy::start(target);
        let round_trip = || -> std::io::Result<[u8; 5]> {
            let mut s = TcpStream::connect(("127.0.0.1", proxy.port))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"hello")?;
            let mut b = [0u8; 5];
            s.read_exact(&mut b)?;
            Ok(b)
        };
        assert_eq!(&round_trip().unwrap(), b"hello");
        proxy.cut();
        assert!(round_trip().is_err(), "a cut link must not carry data");
        proxy.heal();
        assert_eq!(&round_trip().unwrap(), b"hello");
        proxy.black_hole();
        let err = round_trip().unwrap_err();
        assert!(matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut), "{err}");
        proxy.heal();
        assert_eq!(&round_trip().unwrap(), b"hello");
    }
}
