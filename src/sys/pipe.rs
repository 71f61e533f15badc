//! Pipes for splice forwarding, and the per-worker pool that recycles them.
//!
//! A pipe costs two fds and a `pipe2` + `fcntl(F_SETPIPE_SZ)` to create, so each worker keeps a
//! bounded stack of empty pipes. A pipe that still holds bytes when its connection ends is never
//! pooled: those bytes belong to a dead connection and must not leak into the next one.
//!
//! A pipe's memory is the kernel's and cannot be swapped, so the pool also bounds the pipes a
//! worker holds at all (`tuning.max_pipes`), and hands out only pipes of the size asked for:
//! past `fs.pipe-user-pages-soft` an unprivileged user's new pipes get 2 pages and may not
//! grow, and `fs.pipe-max-size` caps growth. Such a pipe would splice in 8 KiB steps, slower
//! than copying through 16 KiB buffers; it is closed and the caller copies instead.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::pipe::{PipeFlags, fcntl_getpipe_size, fcntl_setpipe_size, pipe_with};

/// Why no pipe was handed out.
#[derive(Debug)]
pub enum NoPipe {
    /// The worker already holds `tuning.max_pipes` pipes.
    Limit(usize),
    /// The kernel granted fewer bytes than asked for (see the module docs).
    Short { asked: usize, granted: usize },
    /// `pipe2` failed (EMFILE, ENFILE, ENOMEM), or `F_SETPIPE_SZ` with something else than a
    /// refusal to grow.
    Os(io::Error),
}

impl fmt::Display for NoPipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoPipe::Limit(max) => write!(f, "the worker holds its {max} pipes (tuning.max_pipes)"),
            NoPipe::Short { asked, granted } => write!(
                f,
                "the kernel granted a pipe of {granted} bytes for {asked} (see fs.pipe-user-pages-soft \
                 and fs.pipe-max-size in `ringlb doctor`)"
            ),
            NoPipe::Os(err) => write!(f, "{err}"),
        }
    }
}

impl From<NoPipe> for io::Error {
    fn from(no: NoPipe) -> io::Error {
        match no {
            NoPipe::Os(err) => err,
            other => io::Error::other(other.to_string()),
        }
    }
}

/// The size a pipe got, from `F_SETPIPE_SZ`'s result (the new size, which `F_GETPIPE_SZ` would
/// read back) or, when it refused (EPERM past the per-user limits or above `pipe-max-size`),
/// from `get`; an error unless it is at least `asked`.
fn granted(
    asked: usize,
    set: rustix::io::Result<usize>,
    get: impl FnOnce() -> rustix::io::Result<usize>,
) -> Result<usize, NoPipe> {
    let granted = match set {
        Ok(size) => size,
        Err(rustix::io::Errno::PERM | rustix::io::Errno::BUSY) => {
            get().map_err(|e| NoPipe::Os(e.into()))?
        }
        Err(err) => return Err(NoPipe::Os(err.into())),
    };
    if granted < asked {
        return Err(NoPipe::Short { asked, granted });
    }
    Ok(granted)
}

/// One pipe: bytes are spliced into `write` and out of `read`.
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl Pipe {
    /// A non-blocking, close-on-exec pipe of at least `size` bytes (the kernel rounds up to a
    /// power-of-two number of pages), or why there is none: a pipe the kernel would not make
    /// that big is closed again ([`NoPipe::Short`]).
    pub fn new(size: usize) -> Result<Pipe, NoPipe> {
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)
            .map_err(|e| NoPipe::Os(e.into()))?;
        let capacity = granted(size, fcntl_setpipe_size(&write, size), || {
            fcntl_getpipe_size(&write)
        })?;
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

/// What a pool counts, for the line each worker logs when it stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipeStats {
    /// Pipes created (reuse keeps this low).
    pub created: u64,
    /// Pipes handed out and not given back yet.
    pub in_use: usize,
    /// The most in use at once.
    pub peak_in_use: usize,
    /// Requests refused at `max_pipes`.
    pub refused_limit: u64,
    /// Requests refused because the kernel granted a smaller pipe.
    pub refused_short: u64,
    /// Requests refused because `pipe2` or `fcntl` failed.
    pub refused_os: u64,
}

/// A bounded stack of empty pipes of one size, and a bound on all the pipes handed out.
#[derive(Debug)]
pub struct PipePool {
    idle: Vec<Pipe>,
    max_idle: usize,
    max_pipes: usize,
    size: usize,
    stats: PipeStats,
}

impl PipePool {
    /// A pool of pipes of `size` bytes that keeps at most `max_idle` empty ones, and never
    /// holds more than `max_pipes` in use and idle together.
    pub fn new(size: usize, max_idle: usize, max_pipes: usize) -> Self {
        let max_idle = max_idle.min(max_pipes);
        PipePool {
            idle: Vec::with_capacity(max_idle.min(1024)),
            max_idle,
            max_pipes,
            size,
            stats: PipeStats::default(),
        }
    }

    /// An empty pipe, reused when one is idle; refused at `max_pipes`, or when the kernel does
    /// not give one of the pool's size.
    pub fn get(&mut self) -> Result<Pipe, NoPipe> {
        let pipe = match self.idle.pop() {
            Some(pipe) => pipe,
            None if self.stats.in_use >= self.max_pipes => {
                self.stats.refused_limit += 1;
                return Err(NoPipe::Limit(self.max_pipes));
            }
            None => match Pipe::new(self.size) {
                Ok(pipe) => {
                    self.stats.created += 1;
                    pipe
                }
                Err(no) => {
                    match no {
                        NoPipe::Short { .. } => self.stats.refused_short += 1,
                        _ => self.stats.refused_os += 1,
                    }
                    return Err(no);
                }
            },
        };
        self.stats.in_use += 1;
        self.stats.peak_in_use = self.stats.peak_in_use.max(self.stats.in_use);
        Ok(pipe)
    }

    /// Give back a pipe from [`PipePool::get`]. `empty` must be true only when every byte
    /// spliced in was spliced out; otherwise (or when the pool is full) the pipe is closed.
    pub fn put(&mut self, pipe: Pipe, empty: bool) {
        self.stats.in_use = self.stats.in_use.saturating_sub(1);
        if empty && self.idle.len() < self.max_idle {
            self.idle.push(pipe);
        }
    }

    /// Pipes created so far (reuse keeps this low).
    pub fn created(&self) -> u64 {
        self.stats.created
    }

    /// Pipes waiting for reuse.
    pub fn idle(&self) -> usize {
        self.idle.len()
    }

    /// What the pool has counted.
    pub fn stats(&self) -> PipeStats {
        self.stats
    }
}

/// `ringlb doctor`'s lines about pipes of `size` bytes: what the kernel grants one, and the
/// limits that shrink or refuse them.
pub fn doctor_report(size: usize) -> String {
    let read = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/fs/{name}"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    let show = |v: Option<u64>| v.map_or_else(|| "unreadable".to_owned(), |v| v.to_string());
    let mut out = String::new();
    let probe = match Pipe::new(size) {
        Ok(pipe) => format!("{} bytes", pipe.capacity()),
        Err(NoPipe::Short { granted, .. }) => {
            format!("{granted} bytes: too small, splicing directions would copy")
        }
        Err(no) => format!("none ({no})"),
    };
    out.push_str(&format!(
        "pipe_size {size} (default) asked, granted {probe}\n"
    ));
    out.push_str(&format!(
        "fs.pipe-max-size = {}\n",
        show(read("pipe-max-size"))
    ));
    let soft = read("pipe-user-pages-soft");
    let hard = read("pipe-user-pages-hard");
    out.push_str(&format!(
        "fs.pipe-user-pages-soft = {} / hard = {} (0: no limit; root is exempt)\n",
        show(soft),
        show(hard)
    ));
    let page = rustix::param::page_size().max(1) as u64;
    let pages = (size as u64).div_ceil(page).next_power_of_two();
    if let Some(soft) = soft.filter(|&s| s > 0) {
        out.push_str(&format!(
            "pipes of {size} bytes under the soft limit: {} per user, all workers together\n",
            soft / pages
        ));
    }
    out
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
        let mut pool = PipePool::new(64 * 1024, 2, 16);
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

    /// Pipes in use and idle together never exceed `max_pipes`: the third of two is refused
    /// (it used to be created, whatever the count), and one given back can be had again.
    #[test]
    fn pool_bounds_pipes_in_use() {
        let mut pool = PipePool::new(64 * 1024, 8, 2);
        let a = pool.get().expect("pipe");
        let b = pool.get().expect("pipe");
        assert!(matches!(pool.get(), Err(NoPipe::Limit(2))));
        pool.put(a, true);
        let c = pool.get().expect("the idle pipe is reused");
        assert!(matches!(pool.get(), Err(NoPipe::Limit(2))));
        // A pipe closed (not empty) frees its place too.
        pool.put(b, false);
        let _d = pool.get().expect("a new pipe in the freed place");
        let stats = pool.stats();
        assert_eq!(
            (
                stats.created,
                stats.in_use,
                stats.peak_in_use,
                stats.refused_limit
            ),
            (3, 2, 2, 2)
        );
        drop(c);
        // No pipes at all: every request is refused, none is created.
        let mut none = PipePool::new(64 * 1024, 8, 0);
        assert!(matches!(none.get(), Err(NoPipe::Limit(0))));
        assert_eq!(none.created(), 0);
    }

    /// A pipe smaller than asked (the kernel refused to grow it past the per-user limits, or
    /// above pipe-max-size) is refused; a refusal to grow is not an error of its own.
    #[test]
    fn granted_size_must_reach_the_asked_size() {
        let asked = 256 * 1024;
        assert_eq!(granted(asked, Ok(asked), || Ok(0)).expect("granted"), asked);
        assert_eq!(
            granted(asked, Ok(2 * asked), || Ok(0)).expect("rounded up"),
            2 * asked
        );
        let short = granted(asked, Err(rustix::io::Errno::PERM), || Ok(8192));
        assert!(
            matches!(short, Err(NoPipe::Short { asked: a, granted: 8192 }) if a == asked),
            "{short:?}"
        );
        let short = granted(asked, Ok(64 * 1024), || Ok(0));
        assert!(matches!(short, Err(NoPipe::Short { .. })), "{short:?}");
        let failed = granted(asked, Err(rustix::io::Errno::NOMEM), || Ok(asked));
        assert!(matches!(failed, Err(NoPipe::Os(_))), "{failed:?}");
        // The real thing, where the kernel allows it (root, or within pipe-max-size).
        if let Ok(pipe) = Pipe::new(asked) {
            assert!(pipe.capacity() >= asked);
        }
    }
}
