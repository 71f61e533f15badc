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

/// Most bytes [`recv_into_pipe`] moves at once.
pub const URGENT_CHUNK: usize = 16 * 1024;

/// Move what one `recv` can take from `source` into `pipe` with a copy: the way past urgent
/// data, where splice refuses to move (see [`super::peek`]). `pipe` must be empty. The receive
/// takes at most [`URGENT_CHUNK`] bytes and never more than the pipe's capacity, which may be
/// a single page (`tuning.pipe_size` goes down to 4 KiB), so the write into the empty pipe
/// always takes them all; a short write (which would lose bytes) is an error instead. Returns
/// the bytes moved; 0 at end of stream.
pub fn recv_into_pipe(source: BorrowedFd<'_>, pipe: &Pipe) -> io::Result<usize> {
    let mut scratch = [0u8; URGENT_CHUNK];
    let len = URGENT_CHUNK.min(pipe.capacity());
    let (n, _) = rustix::net::recv(
        source,
        &mut scratch[..len],
        rustix::net::RecvFlags::DONTWAIT,
    )?;
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

    /// With the smallest pipe a configuration allows (one page), the copy past urgent data
    /// takes no more than the pipe holds: it used to receive 16 KiB, write 4 KiB of them and
    /// fail ("short write into an empty pipe"), and the connection was reset.
    #[test]
    fn recv_into_a_one_page_pipe_moves_what_fits() {
        use std::io::{Read, Write};
        let pipe = Pipe::new(4096).expect("pipe");
        assert!(
            pipe.capacity() < URGENT_CHUNK,
            "capacity {}",
            pipe.capacity()
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let mut sender =
            std::net::TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
        let (receiver, _) = listener.accept().expect("accept");
        let sent: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        sender.write_all(&sent).expect("send");
        // Wait (up to 5 s) until everything has arrived, so the receive is not short for lack
        // of bytes.
        let mut peek = vec![0u8; sent.len()];
        for _ in 0..5000 {
            let (queued, _) = rustix::net::recv(&receiver, &mut peek, rustix::net::RecvFlags::PEEK)
                .expect("peek");
            if queued == sent.len() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let moved = recv_into_pipe(receiver.as_fd(), &pipe).expect("no short write");
        assert_eq!(moved, pipe.capacity());
        let mut out = vec![0u8; moved];
        std::fs::File::from(pipe.read.try_clone().expect("dup"))
            .read_exact(&mut out)
            .expect("read the pipe");
        assert_eq!(out, sent[..moved]);
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
