//! Finds the workspace's binaries (`worker`, `lambda-trigger`, examples) in the cargo target
//! directory the current executable runs from.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The binary `name` of this workspace, next to the running executable: `target/<profile>/` both
/// for `target/<profile>/sluice-local` and for a test at `target/<profile>/deps/<test>`.
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    let dir = profile_dir()?;
    let binary = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if is_executable(&binary) {
        return Ok(binary);
    }
    bail!("the binary {name} is not built ({} does not exist): run `cargo build --workspace` first", binary.display())
}

/// An example of this workspace (`target/<profile>/examples/<name>`), built by `cargo test`
/// (which compiles examples) or `cargo build --workspace --examples`.
pub fn workspace_example(name: &str) -> Result<PathBuf> {
    let dir = profile_dir()?.join("examples");
    let binary = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if is_executable(&binary) {
        return Ok(binary);
    }
    bail!(
        "the example {name} is not built ({} does not exist): run `cargo test --workspace` or \
         `cargo build --workspace --examples` first",
        binary.display()
    )
}

/// `target/<profile>/`, worked out from the current executable.
fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the current executable")?;
    let dir = exe.parent().with_context(|| format!("{} has no parent directory", exe.display()))?;
    Ok(match dir.file_name().and_then(|n| n.to_str()) {
        Some("deps" | "examples") => dir.parent().unwrap_or(dir).to_path_buf(),
        _ => dir.to_path_buf(),
    })
}

/// Whether `path` is an executable file.
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}
