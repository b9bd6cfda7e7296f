//! The `iiot-gateway` binary: everything lives in the library (see `cli`).

fn main() -> std::process::ExitCode {
    iiot_gateway::cli::main()
}
