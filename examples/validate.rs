//! The validator library in a program: validates each token read from
//! stdin (one a line) against a sessiond, from memory once the feed is
//! fresh, and prints the answer and where it came from.
//!
//! ```sh
//! SESSIOND_SERVICE_CREDENTIAL=... cargo run --example validate -- http://127.0.0.1:50051 < tokens.txt
//! ```

use std::io::BufRead;
use std::time::Duration;

use sessiond::validator::{Credential, Validator, ValidatorConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let upstream = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let secret = std::env::var("SESSIOND_SERVICE_CREDENTIAL")
        .map_err(|_| "set SESSIOND_SERVICE_CREDENTIAL to the upstream's service credential")?;
    let validator = Validator::start(ValidatorConfig::new(upstream, Credential::service(secret)))?;
    if !validator.ready(Duration::from_secs(5)).await {
        eprintln!("feed not fresh yet: validations go upstream");
    }
    let tokens: Vec<String> = std::io::stdin().lock().lines().collect::<Result<_, _>>()?;
    for token in tokens.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
        match validator.validate(token).await {
            Ok(s) => println!("valid: session {} of {} ({})", s.id, s.user, s.org),
            Err(status) => println!("refused: {:?} {}", status.code(), status.message()),
        }
    }
    let stats = validator.stats();
    println!(
        "{} from memory, {} from upstream, {} refused locally",
        stats.from_memory, stats.from_upstream, stats.refused_locally
    );
    Ok(())
}
