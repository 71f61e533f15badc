//! Pipes for splice forwarding, and the per-worker pool that recycles them.
//!
//! A pipe costs two fds and a `pipe2` + `fcntl(F_SETPIPE_SZ)` to create, so each worker keeps a
//! bounded stack of empty pipes. A pipe that still holds bytes when its connection ends is never
//! pooled: those bytes belong to a dead connection and must not leak into the next one.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::pipe::{PipeFlags, fcntl_setpipe_size, pipe_with};

/// One pipe: bytes are spliced into `write` and out of `read`.
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl Pipe {
    /// A non-blocking, close-on-exec pipe of (at least) `size` bytes. The kernel rounds the size
    /// up to a power-of-two number of pages, and refuses sizes above `fs.pipe-max-size` for
    /// unprivileged users; then the default size is kept.
    pub fn new(size: usize) -> io::Result<Pipe> {
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        let capacity = match fcntl_setpipe_size(&write, size) {
            Ok(capacity) => capacity,
            Err(_) => rustix::pipe::fcntl_getpipe_size(&write)?,
        };
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }

    /// The end bytes are spliced out of.
    pub fn read_end(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// The end bytes are spliced into.
    pub fn write_end(&self) -> BorrowedFd<'_> {
        self.write.as_fd()
    }

    /// Capacity in bytes, as the kernel set it.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Move what one `recv` can take from `source` into `pipe` with a copy: the way past urgent
/// data, where splice refuses to move (see [`super::peek`]). `pipe` must be empty: it holds at
/// least 64 KiB, so the up to 16 KiB read always fit, and a short write (which would lose
/// bytes) is an error instead. Returns the bytes moved; 0 at end of stream.
pub fn recv_into_pipe(source: BorrowedFd<'_>, pipe: &Pipe) -> io::Result<usize> {
    let mut scratch = [0u8; 16 * 1024];
    let (n, _) = rustix::net::recv(source, &mut scratch, rustix::net::RecvFlags::DONTWAIT)?;
    if n == 0 {
        return Ok(0);
    }
    let written = rustix::io::write(pipe.write_end(), &scratch[..n])?;
    if written != n {
        return Err(io::Error::other("short write into an empty pipe"));
    }
    Ok(n)
}

/// A bounded stack of empty pipes of one size.
#[derive(Debug)]
pub struct PipePool {
    idle: Vec<Pipe>,
    max_idle: usize,
    size: usize,
    created: u64,
}

impl PipePool {
    /// A pool that keeps at most `max_idle` empty pipes of `size` bytes.
    pub fn new(size: usize, max_idle: usize) -> Self {
        PipePool {
            idle: Vec::with_capacity(max_idle.min(1024)),
            max_idle,
            size,
            created: 0,
        }
    }

    /// An empty pipe, reused when one is idle.
    pub fn get(&mut self) -> io::Result<Pipe> {
        if let Some(pipe) = self.idle.pop() {
            return Ok(pipe);
        }
        self.created += 1;
        Pipe::new(self.size)
    }

    /// Give back a pipe. `empty` must be true only when every byte spliced in was spliced out;
    /// otherwise (or when the pool is full) the pipe is closed.
    pub fn put(&mut self, pipe: Pipe, empty: bool) {
        if empty && self.idle.len() < self.max_idle {
            self.idle.push(pipe);
        }
    }

    /// Pipes created so far (reuse keeps this low).
    pub fn created(&self) -> u64 {
        self.created
    }

    /// Pipes waiting for reuse.
    pub fn idle(&self) -> usize {
        self.idle.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::pipe::{SpliceFlags, splice};

    #[test]
    fn pipe_moves_bytes_and_reports_its_capacity() {
        let pipe = Pipe::new(256 * 1024).expect("pipe");
        assert!(pipe.capacity() >= 64 * 1024);
        rustix::io::write(pipe.write_end(), b"hello").expect("write");
        let mut buf = [0u8; 8];
        let n = rustix::io::read(pipe.read_end(), &mut buf).expect("read");
        assert_eq!(&buf[..n], b"hello");
        // Empty and non-blocking: a splice out would block, so it must say EAGAIN.
        let (r, w) = pipe_with(PipeFlags::CLOEXEC).expect("pipe");
        let err = splice(pipe.read_end(), None, &w, None, 16, SpliceFlags::NONBLOCK)
            .expect_err("nothing to splice");
        assert_eq!(err, rustix::io::Errno::AGAIN);
        drop(r);
    }

    #[test]
    fn pool_reuses_only_empty_pipes_and_stays_bounded() {
        let mut pool = PipePool::new(64 * 1024, 2);
        let a = pool.get().expect("pipe");
        let b = pool.get().expect("pipe");
        let c = pool.get().expect("pipe");
        assert_eq!(pool.created(), 3);
        pool.put(a, true);
        pool.put(b, false);
        pool.put(c, true);
        assert_eq!(pool.idle(), 2);
        let _d = pool.get().expect("pipe");
        assert_eq!(pool.created(), 3, "an idle pipe was reused");
    }
}
