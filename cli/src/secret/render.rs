//! `secret inspect --pretty` and `config inspect --pretty`, byte for byte as docker/cli's
//! templates print them (`secretInspectPrettyTemplate`, `configInspectPrettyTemplate`):
//! Docker writes these without a tabwriter, so its odd spacing (the secret's `ID:` two
//! columns short, the config's tabs) is kept for scripts that read it.

use crate::listing::go_time;
use shoal_api::secrets::{Config, Secret};
use std::collections::BTreeMap;

/// ` - key=value` lines; a label without a value shows its key only.
fn labels(o: &mut String, labels: &BTreeMap<String, String>) {
    if labels.is_empty() {
        return;
    }
    o.push_str("Labels:\n");
    for (k, v) in labels {
        if v.is_empty() {
            o.push_str(&format!(" - {k}\n"));
        } else {
            o.push_str(&format!(" - {k}={v}\n"));
        }
    }
}

/// A secret's summary; it has no data to show.
pub fn secret_pretty(s: &Secret) -> String {
    let mut o = format!(
        "ID:              {}\nName:              {}\n",
        s.id, s.spec.name
    );
    labels(&mut o, &s.spec.labels);
    let driver = s.spec.driver.as_ref().map_or("", |d| d.name.as_str());
    o.push_str(&format!(
        "Driver:            {driver}\nCreated at:        {}\nUpdated at:        {}\n",
        go_time(&s.created_at),
        go_time(&s.updated_at)
    ));
    o
}

/// A config's summary, its data as text after "Data:".
pub fn config_pretty(c: &Config) -> String {
    let mut o = format!("ID:\t\t\t{}\nName:\t\t\t{}\n", c.id, c.spec.name);
    labels(&mut o, &c.spec.labels);
    o.push_str(&format!(
        "Created at:            \t{}\nUpdated at:            \t{}\nData:\n{}\n",
        go_time(&c.created_at),
        go_time(&c.updated_at),
        String::from_utf8_lossy(&c.spec.data)
    ));
    o
}
