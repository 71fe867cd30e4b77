//! Load generator for the benchmark (see bench/README.md).

fn main() {}
