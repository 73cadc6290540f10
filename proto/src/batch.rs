//! Cutting streams of objects into messages the transport takes.
//!
//! Every message that carries objects (upload, download and fast-sync
//! batches) is filled by a [`Batcher`]: it sends a batch once it holds its
//! target, and cuts a batch *before* an object that would take it past
//! [`BATCH_LIMIT`], so no message ever exceeds the transport's limit, however
//! large the objects (each is at most [`MAX_OBJECT`]).
//!
//! [`MAX_OBJECT`]: crate::object::MAX_OBJECT

use crate::tls::MAX_MESSAGE;

/// Bytes of objects one message may carry: the transport's limit less room
/// for the message's own framing.
pub const BATCH_LIMIT: usize = MAX_MESSAGE - (256 << 10);
/// Framing of one object in a batch (id, field tags and lengths), counted
/// generously.
pub const PER_OBJECT: usize = 64;

const _: () = assert!(crate::object::MAX_OBJECT + PER_OBJECT <= BATCH_LIMIT, "one object always fits");

/// Objects waiting to be sent, and when to send them.
#[derive(Debug)]
pub struct Batcher<T> {
    items: Vec<T>,
    bytes: usize,
    target: usize,
    max_items: usize,
}

impl<T> Batcher<T> {
    /// A batcher that sends once a batch holds `target` bytes (capped at
    /// [`BATCH_LIMIT`]).
    pub fn new(target: usize) -> Self {
        Batcher { items: Vec::new(), bytes: 0, target: target.min(BATCH_LIMIT), max_items: usize::MAX }
    }

    /// Also sends a batch once it holds `items` objects (so that a request
    /// naming each of its ids stays under the receiver's limit).
    pub fn at_most(self, items: usize) -> Self {
        Batcher { max_items: items.max(1), ..self }
    }

    /// Adds an object of `len` bytes. Returns the batch to send now, if
    /// any: the one before it, when that is full or the object would take
    /// it past the limit.
    pub fn push(&mut self, item: T, len: usize) -> Option<Vec<T>> {
        let len = len + PER_OBJECT;
        let cut = !self.items.is_empty()
            && (self.bytes >= self.target
                || self.bytes + len > BATCH_LIMIT
                || self.items.len() >= self.max_items);
        let ready = cut.then(|| self.take());
        self.items.push(item);
        self.bytes += len;
        ready
    }

    /// Whether the batch has reached its target and may be sent.
    pub fn is_full(&self) -> bool {
        self.bytes >= self.target
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The objects so far, leaving the batcher empty.
    pub fn take(&mut self) -> Vec<T> {
        self.bytes = 0;
        std::mem::take(&mut self.items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::MAX_OBJECT;

    #[test]
    fn no_batch_passes_the_limit_and_nothing_is_lost() {
        let mut b = Batcher::new(4 << 20);
        let sizes = [10, MAX_OBJECT, 1, MAX_OBJECT, MAX_OBJECT, 3 << 20, 5 << 20, 7, MAX_OBJECT, 2];
        let mut sent: Vec<Vec<usize>> = Vec::new();
        for (i, len) in sizes.iter().enumerate() {
            sent.extend(b.push(i, *len).map(|batch| batch.to_vec()));
        }
        sent.push(b.take());
        let all: Vec<usize> = sent.iter().flatten().copied().collect();
        assert_eq!(all, (0..sizes.len()).collect::<Vec<_>>(), "every object once, in order");
        assert!(sent.iter().all(|batch| !batch.is_empty()));
        for batch in &sent {
            let bytes: usize = batch.iter().map(|i| sizes[*i] + PER_OBJECT).sum();
            assert!(bytes <= BATCH_LIMIT, "{batch:?}: {bytes} bytes");
        }
        assert!(sent.len() >= 5);
    }

    #[test]
    fn batches_hold_at_most_the_items_asked() {
        let mut b = Batcher::new(4 << 20).at_most(3);
        let mut sent: Vec<Vec<usize>> = (0..10).filter_map(|i| b.push(i, 10)).collect();
        sent.push(b.take());
        assert_eq!(sent, vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 7, 8], vec![9]]);
    }
}
