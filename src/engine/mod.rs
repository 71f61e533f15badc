//! Engines: thin shells that turn core actions into system calls.
