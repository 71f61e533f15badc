//! Raw system calls that no dependency wraps. The only module besides the io_uring engine with `unsafe`.
