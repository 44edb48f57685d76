//! `kiseki certs`: a development certificate authority for mutual TLS between nodes and
//! clients (not for production: the CA key sits in a plain file).

use std::path::PathBuf;

use clap::Subcommand;

/// `kiseki certs` subcommands.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Creates a CA (`ca.pem`, `ca.key`) in DIR; refuses to replace an existing CA key.
    Init {
        /// Directory for the CA and the certificates it issues.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issues `NAME.pem` / `NAME.key` (server and client use) signed by the CA in DIR.
    /// Nodes are named `node-N`; `kiseki meta --tls-dir` uses `client` by default.
    Issue {
        /// The CA's directory (the files are written there too).
        #[arg(long)]
        dir: PathBuf,
        /// Certificate name, e.g. `node-1` or `client`.
        #[arg(long)]
        name: String,
        /// DNS names or IP addresses the certificate is valid for (repeat or comma separate).
        #[arg(long = "san", value_delimiter = ',')]
        sans: Vec<String>,
    },
}

/// Runs a `kiseki certs` subcommand.
pub fn run(command: CertsCommand) -> anyhow::Result<()> {
    match command {
        CertsCommand::Init { dir } => {
            let files = kiseki_net::tls::generate_dev_ca(&dir)?;
            println!(
                "CA {} (key {})",
                files.certificate_pem.display(),
                files.key_pem.display()
            );
        }
        CertsCommand::Issue { dir, name, sans } => {
            let files = kiseki_net::tls::issue_certificate(&dir, &name, &sans, &dir)?;
            println!(
                "{name}: {} (key {})",
                files.certificate_pem.display(),
                files.key_pem.display()
            );
        }
    }
    Ok(())
}
