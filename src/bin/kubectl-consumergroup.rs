//! `kubectl consumergroup` (installed as `kubectl-consumergroup`, and as `kubectl-cg` through a
//! link): everything is in the library's `plugin` module.

fn main() -> std::process::ExitCode {
    consumer_group_operator::plugin::main()
}
