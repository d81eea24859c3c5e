//! Where the harness finds the repository's files and its Python tools (moto, the AWS CLI).
//!
//! The repository root is the directory above this crate, fixed at compile time, unless
//! `SLUICE_REPO_ROOT` says otherwise. The Python virtual environment that `make` builds lives in
//! `<repo>/.venv`; `SLUICE_VENV` points somewhere else (a shared venv, CI's cache).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// Overrides the repository root (default: the parent of this crate's directory).
pub const REPO_ROOT_ENV: &str = "SLUICE_REPO_ROOT";
/// Overrides the Python virtual environment (default: `<repo>/.venv`).
pub const VENV_ENV: &str = "SLUICE_VENV";

/// The repository root.
pub fn repo_root() -> PathBuf {
    if let Some(root) = std::env::var_os(REPO_ROOT_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(root);
    }
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir.parent().unwrap_or(crate_dir).to_path_buf()
}

/// The Python virtual environment holding `moto_server` and `aws`.
pub fn venv_dir() -> PathBuf {
    match std::env::var_os(VENV_ENV).filter(|v| !v.is_empty()) {
        Some(venv) => PathBuf::from(venv),
        None => repo_root().join(".venv"),
    }
}

/// The path of an executable in the venv's `bin/`, or an error saying how to get it.
pub fn venv_tool(name: &str) -> Result<PathBuf> {
    let venv = venv_dir();
    let tool = venv.join("bin").join(name);
    if tool.is_file() {
        return Ok(tool);
    }
    if !venv.exists() {
        bail!(
            "the Python virtual environment {} does not exist: run `make` in the repository root to \
             create it (pip install -r requirements-dev.txt), or point {VENV_ENV} at one that has \
             moto[server] and awscli",
            venv.display()
        );
    }
    bail!(
        "{} not found in the Python virtual environment {}: run `make` (pip install -r \
         requirements-dev.txt) or point {VENV_ENV} at a venv that has it",
        name,
        venv.display()
    )
}

/// A path relative to the repository root, made absolute.
pub fn in_repo(relative: impl AsRef<Path>) -> PathBuf {
    repo_root().join(relative)
}
