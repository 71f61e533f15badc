//! Benchmark harness support: the end-to-end harness behind the `e2e` binary lives in [`e2e`];
//! the criterion micro-benchmarks live in `benches/`.

pub mod e2e;
