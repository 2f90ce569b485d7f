use clap::Parser;
use consumer_group_operator::cli::{Cli, Command};

fn main() -> anyhow::Result<()> {
    consumer_group_operator::runtime::limit_malloc_arenas();
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", consumer_group_operator::crd::crds_yaml()?);
            Ok(())
        }
        Command::Run(args) => {
            consumer_group_operator::cli::init_tracing(args.log_format, &args.log_level)?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(consumer_group_operator::runtime::run(args))
        }
    }
}
