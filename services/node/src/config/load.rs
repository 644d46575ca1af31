//! Reading configuration files: merge in order, `${VAR}` substitution, errors that name the
//! file and the key.

use std::path::{Path, PathBuf};

use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider};

use super::{validate, ConfigError, NodesConfig, RemoteConfig};

/// Load and validate a node configuration from `paths`, merged in order.
pub fn load<C: NodesConfig>(paths: &[PathBuf]) -> Result<C, ConfigError> {
    let figment = merge(paths)?;
    let config: C = extract(&figment)?;
    validate::validate(&config, &figment)?;
    Ok(config)
}

/// Load a remote-administration configuration.
pub fn load_remote(paths: &[PathBuf]) -> Result<RemoteConfig, ConfigError> {
    extract::<RemoteConfig>(&merge(paths)?).map(RemoteConfig::apply_tls_defaults)
}

fn merge(paths: &[PathBuf]) -> Result<Figment, ConfigError> {
    let mut figment = Figment::new();
    for path in paths {
        let raw = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
        let text = substitute(path, &raw, |v| std::env::var(v).ok())?;
        toml::from_str::<toml::Value>(&text)
            .map_err(|e| ConfigError::Syntax { path: path.clone(), message: e.to_string() })?;
        figment = figment.merge(TomlFile { path: path.clone(), text });
    }
    Ok(figment)
}

fn extract<T: serde::de::DeserializeOwned>(figment: &Figment) -> Result<T, ConfigError> {
    figment.extract().map_err(|e| ConfigError::Invalid(describe(e)))
}

/// One figment error per line, each with its key and file.
fn describe(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| {
            let key = e.path.iter().filter(|k| k.as_str() != "default").cloned().collect::<Vec<_>>().join(".");
            let file =
                e.metadata.as_ref().and_then(|m| m.source.as_ref()).map(|s| format!(" (in {s})")).unwrap_or_default();
            if key.is_empty() {
                format!("{}{file}", e.kind)
            } else {
                format!("{key}: {}{file}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A TOML file as a figment provider whose errors name the file.
struct TomlFile {
    path: PathBuf,
    text: String,
}

impl Provider for TomlFile {
    fn metadata(&self) -> Metadata {
        Metadata::from(self.path.display().to_string(), figment::Source::File(self.path.clone()))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        use figment::providers::Format;
        figment::providers::Toml::string(&self.text).data()
    }
}

/// Replace `${VAR}` and `${VAR:-default}`; `$${` stands for a literal `${`.
pub fn substitute(path: &Path, text: &str, env: impl Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(body) = tail.strip_prefix("${") {
            let end = body
                .find('}')
                .ok_or(ConfigError::Unterminated { path: path.to_path_buf(), at: text.len() - tail.len() })?;
            let expr = &body[..end];
            let (var, default) = match expr.split_once(":-") {
                Some((v, d)) => (v, Some(d)),
                None => (expr, None),
            };
            match (env(var), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(ConfigError::UnsetVariable { path: path.to_path_buf(), var: var.to_string() })
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_variables_are_substituted() {
        let p = Path::new("x.toml");
        let env = |v: &str| (v == "PGPASS").then(|| "s3cret".to_string());
        assert_eq!(
            substitute(p, "url = \"postgres://u:${PGPASS}@h\"", env).unwrap(),
            "url = \"postgres://u:s3cret@h\""
        );
        assert_eq!(substitute(p, "port = ${PORT:-5432}", env).unwrap(), "port = 5432");
        assert_eq!(substitute(p, "x = \"$${NOT}\" $5", env).unwrap(), "x = \"${NOT}\" $5");
        let e = substitute(p, "url = \"${NOPE}\"", env).unwrap_err().to_string();
        assert!(e.contains("x.toml") && e.contains("NOPE is not set"), "{e}");
        assert!(substitute(p, "url = \"${OPEN", env).unwrap_err().to_string().contains("unterminated"));
    }
}
