use clap::Parser;
use consumer_group_operator::cli::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", consumer_group_operator::crd::crds_yaml()?);
            Ok(())
        }
        Command::Run(args) => {
            consumer_group_operator::cli::init_tracing(args.log_format, &args.log_level)?;
            consumer_group_operator::runtime::run(args).await
        }
    }
}
