//! The control socket: `coffer ctl` talks to the daemon over a Unix socket
//! only its user can open (mode 0600), one JSON request line and one JSON
//! answer line per connection.
//!
//! Status, pause, resume, stop and wait are answered here at once, even
//! while a backup runs; sync and reload go to the daemon's loop, which
//! answers when it has done them.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Wake;
use super::status::Shared;
use crate::error::{Error, Result};
use crate::steering::Steering;

/// The longest request line accepted.
const MAX_REQUEST: u64 = 64 * 1024;
/// A client that sends nothing for this long is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    Status,
    /// Back up every location now; `allow_deletions` names locations whose
    /// mass deletion is accepted.
    Sync {
        allow_deletions: Vec<String>,
    },
    Reload,
    Stop,
    Pause,
    Resume,
    /// Answer once no backup runs and no sync is queued.
    Wait {
        timeout_secs: u64,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    pub message: String,
    #[serde(default)]
    pub detail: Value,
}

impl Response {
    pub fn ok(message: impl Into<String>, detail: Value) -> Response {
        Response { ok: true, message: message.into(), detail }
    }

    pub fn failed(message: impl Into<String>, detail: Value) -> Response {
        Response { ok: false, message: message.into(), detail }
    }
}

/// What the socket's handlers reach.
pub struct Context {
    pub shared: Arc<Shared>,
    pub steering: Arc<Steering>,
    pub wake: Sender<Wake>,
}

/// Binds the socket, replacing one a dead daemon left; refuses while a
/// live daemon answers on it.
pub fn bind(path: &Path) -> Result<UnixListener> {
    if UnixStream::connect(path).is_ok() {
        return Err(Error::Busy(format!(
            "a coffer daemon is already running (control socket {})",
            path.display()
        )));
    }
    let _ = std::fs::remove_file(path);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(Error::io(parent))?;
    }
    let listener = UnixListener::bind(path).map_err(Error::io(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(Error::io(path))?;
    Ok(listener)
}

pub fn serve(listener: UnixListener, context: Arc<Context>) {
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let context = context.clone();
            std::thread::spawn(move || {
                if let Err(e) = answer(stream, &context) {
                    tracing::debug!("control connection: {e}");
                }
            });
        }
    });
}

fn answer(stream: UnixStream, context: &Context) -> std::io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line)?;
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(request) => handle(request, context),
        Err(e) => Response::failed(format!("not a control request: {e}"), Value::Null),
    };
    let mut text = serde_json::to_string(&response).expect("responses serialize");
    text.push('\n');
    (&stream).write_all(text.as_bytes())
}

fn handle(request: Request, c: &Context) -> Response {
    match request {
        Request::Status => {
            let status = c.shared.snapshot(&c.steering);
            Response::ok(
                format!("{:?}", status.state),
                serde_json::to_value(status).expect("status serializes"),
            )
        }
        Request::Pause => {
            c.steering.pause(true);
            Response::ok("paused: uploads stop at the next object boundary", Value::Null)
        }
        Request::Resume => {
            c.steering.pause(false);
            Response::ok("resumed", Value::Null)
        }
        Request::Stop => {
            c.steering.stop();
            let _ = c.wake.send(Wake::Stop);
            Response::ok("stopping: the upload stops at the next object boundary", Value::Null)
        }
        Request::Wait { timeout_secs } => match c.shared.wait_idle(Duration::from_secs(timeout_secs)) {
            true => Response::ok("idle", Value::Null),
            false => Response::failed(format!("still busy after {timeout_secs}s"), Value::Null),
        },
        Request::Sync { allow_deletions } => {
            let (reply, answer) = mpsc::channel();
            c.shared.update(|s| s.queued_syncs += 1);
            to_loop(c, Wake::Sync { allow_deletions, reply }, answer)
        }
        Request::Reload => {
            let (reply, answer) = mpsc::channel();
            to_loop(c, Wake::Reload { reply: Some(reply) }, answer)
        }
    }
}

fn to_loop(c: &Context, wake: Wake, answer: mpsc::Receiver<Response>) -> Response {
    if c.wake.send(wake).is_err() {
        return Response::failed("the daemon is shutting down", Value::Null);
    }
    answer.recv().unwrap_or_else(|_| Response::failed("the daemon stopped before answering", Value::Null))
}

/// Sends one request to the daemon listening on `socket` (`coffer ctl`).
pub fn call(socket: &Path, request: &Request) -> Result<Response> {
    let not_running = |e: std::io::Error| {
        Error::NotFound(format!(
            "no coffer daemon answers on {} ({e}); start it with `coffer daemon`",
            socket.display()
        ))
    };
    let mut stream = UnixStream::connect(socket).map_err(not_running)?;
    let mut text = serde_json::to_string(request).expect("requests serialize");
    text.push('\n');
    stream.write_all(text.as_bytes()).map_err(Error::io(socket))?;
    let mut line = String::new();
    BufReader::new(stream.take(16 << 20)).read_line(&mut line).map_err(Error::io(socket))?;
    serde_json::from_str(&line)
        .map_err(|e| Error::Invalid(format!("the daemon answered something unreadable: {e}")))
}
