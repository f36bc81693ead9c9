//! Finding the product binary the tools start: `--binary`/`DSG_BINARY`, or,
//! when run through cargo (`cargo demo`), built from this workspace first
//! with the same profile (so a changed source is never run stale), or else
//! the `redis-dsg` next to this program.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The redis-dsg binary to run.
pub(crate) fn binary(given: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = given {
        return path
            .is_file()
            .then(|| path.to_path_buf())
            .ok_or_else(|| format!("--binary {}: no such file", path.display()));
    }
    let here =
        std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?;
    let sibling = here.with_file_name("redis-dsg");
    // `cargo run` sets CARGO and CARGO_MANIFEST_DIR for the program it runs.
    if let (Some(cargo), Some(manifest)) = (
        std::env::var_os("CARGO"),
        std::env::var_os("CARGO_MANIFEST_DIR"),
    ) {
        let mut build = Command::new(cargo);
        // Selecting this package too keeps cargo's feature unification the
        // same as for `cargo run -p dsg-dev`: built alone, the product would
        // resolve its dependencies' features differently and every `cargo
        // demo` would rebuild fred, rustls and ring twice.
        // The variables `cargo run` sets for the program it runs must not
        // reach this build: ring's build script is rerun when
        // CARGO_MANIFEST_DIR changes, so inheriting it rebuilt ring, rustls,
        // fred and both crates here, and again at the next `cargo dsg`
        // (about 2 minutes each on 2 cores).
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_PKG_")
                || name.starts_with("CARGO_MANIFEST_")
                || [
                    "CARGO_CRATE_NAME",
                    "CARGO_BIN_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                ]
                .contains(&name.as_ref())
            {
                build.env_remove(name.as_ref());
            }
        }
        build.current_dir(manifest).args([
            "build",
            "--locked",
            "--quiet",
            "-p",
            "redis-dsg",
            "-p",
            "dsg-dev",
            "--bin",
            "redis-dsg",
        ]);
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        let mut child = build
            .spawn()
            .map_err(|e| format!("cannot run cargo to build redis-dsg: {e}"))?;
        let status = wait_saying_so(&mut child)
            .map_err(|e| format!("cannot wait for cargo building redis-dsg: {e}"))?;
        if !status.success() {
            return Err(format!("building redis-dsg failed ({status})"));
        }
    }
    sibling.is_file().then_some(sibling.clone()).ok_or_else(|| {
        format!(
            "{} not found; build it (cargo build --release -p redis-dsg) or pass --binary",
            sibling.display()
        )
    })
}

/// Waits for the quiet build; when it takes longer than an up-to-date
/// check does, says what is happening (a first `cargo demo` otherwise
/// printed `Running …` and then nothing for about 90 s).
fn wait_saying_so(child: &mut std::process::Child) -> std::io::Result<std::process::ExitStatus> {
    let started = std::time::Instant::now();
    let mut said = false;
    loop {
        if let Some(status) = child.try_wait()? {
            if said {
                eprintln!(
                    "redis-dsg built in {:.0} s",
                    started.elapsed().as_secs_f64()
                );
            }
            return Ok(status);
        }
        if !said && started.elapsed() >= std::time::Duration::from_secs(2) {
            eprintln!(
                "building redis-dsg from this workspace first (cargo build{}); \
                 the first build takes a minute or two on 2 cores …",
                if cfg!(debug_assertions) {
                    ""
                } else {
                    " --release"
                }
            );
            said = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
