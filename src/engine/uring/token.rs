//! What each submission is for, packed into the top 8 bits of its `user_data`.

use crate::core::conn::Dir;

/// The operation a completion belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A listener's accept; the slot field carries the listener index.
    Accept,
    Connect,
    /// The timeout linked to a connect.
    ConnectTimeout,
    /// A receive into a buffer (copy mode).
    Recv(Dir),
    /// A send from a buffer, or from several with `sendmsg` (copy mode).
    Send(Dir),
    /// A send bundle from the direction's send ring (copy mode, 6.10).
    SendBundle(Dir),
    /// Readiness of the source socket before a splice into the pipe.
    PollIn(Dir),
    /// Socket → pipe.
    SpliceIn(Dir),
    /// Writability of the sink socket before a retried splice out of the pipe.
    PollOut(Dir),
    /// Pipe → socket.
    SpliceOut(Dir),
    Shutdown,
    /// An async cancel of some of the connection's operations.
    Cancel,
    /// The close of a finished connection's socket (posts a completion only on failure).
    Close,
    /// Readability of the worker's inbox eventfd: a message arrived.
    Wake,
    /// An inspect-phase receive from the client, into the connection's inspect buffer.
    Inspect,
    /// A send of (the rest of) the preamble to the backend.
    Preamble,
    /// Readability of the worker's UDP relay (see [`crate::engine::udp`]).
    Udp,
    /// A UDP listener's multishot `recvmsg`; the slot field carries the UDP listener index.
    UdpRecv,
}

impl Op {
    /// The 8-bit code.
    pub fn code(self) -> u8 {
        let with_dir = |base: u8, dir: Dir| base + dir.index() as u8;
        match self {
            Op::Accept => 1,
            Op::Connect => 2,
            Op::ConnectTimeout => 3,
            Op::Shutdown => 4,
            Op::Cancel => 5,
            Op::Close => 6,
            Op::Wake => 7,
            Op::Inspect => 8,
            Op::Preamble => 9,
            Op::Udp => 24,
            Op::UdpRecv => 25,
            Op::Recv(d) => with_dir(10, d),
            Op::Send(d) => with_dir(12, d),
            Op::PollIn(d) => with_dir(14, d),
            Op::SpliceIn(d) => with_dir(16, d),
            Op::PollOut(d) => with_dir(18, d),
            Op::SpliceOut(d) => with_dir(20, d),
            Op::SendBundle(d) => with_dir(22, d),
        }
    }

    /// The operation a code names; `None` for codes no submission uses.
    pub fn from_code(code: u8) -> Option<Op> {
        let dir = |c: u8| {
            if c % 2 == 0 {
                Dir::Upstream
            } else {
                Dir::Downstream
            }
        };
        Some(match code {
            1 => Op::Accept,
            2 => Op::Connect,
            3 => Op::ConnectTimeout,
            4 => Op::Shutdown,
            5 => Op::Cancel,
            6 => Op::Close,
            7 => Op::Wake,
            8 => Op::Inspect,
            9 => Op::Preamble,
            24 => Op::Udp,
            25 => Op::UdpRecv,
            10 | 11 => Op::Recv(dir(code)),
            12 | 13 => Op::Send(dir(code)),
            14 | 15 => Op::PollIn(dir(code)),
            16 | 17 => Op::SpliceIn(dir(code)),
            18 | 19 => Op::PollOut(dir(code)),
            20 | 21 => Op::SpliceOut(dir(code)),
            22 | 23 => Op::SendBundle(dir(code)),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_round_trips_and_unknown_codes_are_rejected() {
        let mut ops = vec![
            Op::Accept,
            Op::Connect,
            Op::ConnectTimeout,
            Op::Shutdown,
            Op::Cancel,
            Op::Close,
            Op::Wake,
            Op::Inspect,
            Op::Preamble,
            Op::Udp,
            Op::UdpRecv,
        ];
        for d in Dir::BOTH {
            ops.extend([
                Op::Recv(d),
                Op::Send(d),
                Op::PollIn(d),
                Op::SpliceIn(d),
                Op::PollOut(d),
                Op::SpliceOut(d),
                Op::SendBundle(d),
            ]);
        }
        let mut codes = std::collections::HashSet::new();
        for op in ops {
            assert_eq!(Op::from_code(op.code()), Some(op));
            assert!(codes.insert(op.code()), "codes are distinct");
        }
        for code in [0u8, 26, 100, 255] {
            assert_eq!(Op::from_code(code), None);
        }
    }
}
