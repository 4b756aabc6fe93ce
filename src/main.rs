//! The `contactd` binary: everything lives in the library; see `cli::main`.

fn main() -> std::process::ExitCode {
    contactd::cli::main()
}
