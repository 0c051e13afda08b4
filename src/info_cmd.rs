//! `aerie info`: asks a node info names (like `asinfo`).

use crate::client::Connection;
use crate::error::{Error, Result};

/// Asks `names` of the node at `host`.
pub fn ask(host: &str, names: &[&str]) -> Result<Vec<(String, String)>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Refused(e.to_string()))?;
    runtime.block_on(async {
        let mut conn = Connection::connect(host)
            .await
            .map_err(|e| Error::Refused(format!("{host}: {e}")))?;
        conn.info(names)
            .await
            .map_err(|e| Error::Refused(format!("{host}: {e}")))
    })
}

/// Prints `name<TAB>value` per answer (the value alone with one name).
pub fn run(host: &str, names: &[String]) -> Result<()> {
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let answers = ask(host, &names)?;
    if let [(_, value)] = answers.as_slice() {
        println!("{value}");
        return Ok(());
    }
    for (name, value) in answers {
        println!("{name}\t{value}");
    }
    Ok(())
}
