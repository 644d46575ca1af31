//! `syncline certs`: a development CA and certificates for nodes and operators, as the demo
//! uses them; for trying TLS out and for the Compose stack (production certificates come from
//! the operator's own CA).

use std::path::PathBuf;

use anyhow::Result;
use syncline_node::tls::dev::{write_dev_certs, LOCAL_HOSTS};

/// Options of `syncline certs`.
#[derive(clap::Args, Debug)]
pub struct CertsArgs {
    /// Directory to write `ca.pem` and `<name>.pem` / `<name>.key` into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Names to issue certificates for (comma-separated): each is valid for the name itself,
    /// localhost, 127.0.0.1 and every --host, as a server and as a client certificate.
    #[arg(long, value_delimiter = ',', required = true)]
    names: Vec<String>,
    /// Further host names or IP addresses every certificate is valid for.
    #[arg(long, value_delimiter = ',')]
    host: Vec<String>,
}

/// Write a new CA and the certificates.
pub fn run(args: CertsArgs) -> Result<()> {
    let mut hosts: Vec<&str> = LOCAL_HOSTS.to_vec();
    hosts.extend(args.host.iter().map(String::as_str));
    let certs = write_dev_certs(&args.out, &args.names, &hosts)?;
    println!("CA: {}", certs.ca.display());
    for n in &args.names {
        println!("{n}: {} {}", certs.cert(n).display(), certs.key(n).display());
    }
    Ok(())
}
