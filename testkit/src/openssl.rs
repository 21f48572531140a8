//! Running the openssl CLI. Test certificates are made with the real tool (not with the
//! BoringSSL the gateway links) so that what the gateway parses is what operators upload.

use std::path::Path;
use std::process::Command;

/// Runs `openssl ARGS` in `dir` (relative file names in `args` are inside it) and returns
/// its stdout. The error names the command, the directory, the exit status and stderr.
pub fn run(dir: &Path, args: &[&str]) -> Result<Vec<u8>, String> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| {
            format!("running openssl: {e} (is the openssl CLI installed? Debian: apt-get install openssl)")
        })?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "openssl {} (in {}) failed ({}):\n{}",
            args.join(" "),
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        ))
    }
}
