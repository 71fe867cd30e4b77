//! The `hopguard` binary: everything lives in the library; see `cli`.

fn main() -> std::process::ExitCode {
    hopguard::cli::main()
}
