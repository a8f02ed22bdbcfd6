//! `cargo xtask image`: walship's container image, an OCI image archive built here
//! with no Docker daemon and no registry.
//!
//! The image is one layer: the binary at `/usr/local/bin/walship`, a `/manager` link
//! to it (the Barman Cloud plugin's sidecar image runs `/manager instance`, and
//! CloudNativePG probes it with `/manager healthcheck unix`; the binary answers to
//! that name), the shared libraries the binary links against (read from `ldd`, so a
//! static build brings none), the host's CA bundle, and `/etc/passwd` and
//! `/etc/group` naming the user it runs as: 26:26, the `postgres` user of
//! CloudNativePG's PostgreSQL images and the plugin's sidecar, because the sidecar
//! writes into the same PGDATA volume. Nothing else is in it: no shell, no package
//! manager, and nothing the binary writes to (CloudNativePG mounts its root
//! filesystem read-only; every path walship writes is a volume).
//!
//! The binary goes in as cargo's release profile leaves it: without debug information
//! but with its symbols, so a panic's backtrace names functions (stripping them would
//! save about 2 of the 18 MB a node pulls).
//!
//! Reproducible: every entry's time is the commit's time (or `SOURCE_DATE_EPOCH`),
//! owners are 0:0, entries are sorted, and gzip's header carries no time or name,
//! so the same binary and libraries give the same digest.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use flate2::{Compression, GzBuilder};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::cargo;

/// The user and group the image runs as (CloudNativePG's `postgres`).
pub const USER: u32 = 26;
/// Where the binary is in the image.
pub const BINARY: &str = "usr/local/bin/walship";
/// The name the plugin's sidecar image offers it under.
pub const MANAGER: &str = "manager";
/// The CA bundle, where rustls-native-certs and OpenSSL look for it.
const CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";

const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Put the debug build in the image instead of building the release one.
    #[arg(long)]
    debug: bool,
    /// Where to write the OCI image archive [default:
    /// <target>/image/walship-<version>.oci.tar].
    #[arg(long)]
    output: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<u8> {
    let binary = cargo::build_walship(!args.debug)?;
    let output = args.output.unwrap_or_else(|| {
        walship_testkit::target_dir()
            .join("image")
            .join(format!("walship-{}.oci.tar", env!("CARGO_PKG_VERSION")))
    });
    let image = build(&Input::from_checkout(&binary)?, &output)?;
    println!("{}", image.summary());
    println!(
        "load it with `skopeo copy oci-archive:{}:{} docker://REGISTRY/walship:{}`",
        output.display(),
        image.tag,
        image.tag
    );
    Ok(0)
}

/// What goes into an image besides the fixed files.
#[derive(Debug, Clone)]
pub struct Input {
    pub binary: PathBuf,
    /// The tag (`org.opencontainers.image.ref.name`) and the version label.
    pub version: String,
    /// The commit, with `-dirty` when the checkout had changes.
    pub revision: String,
    /// Seconds since the epoch: every file's time and the image's `created`.
    pub epoch: i64,
}

impl Input {
    /// The binary with the checkout's version, commit and commit time
    /// (`SOURCE_DATE_EPOCH` overrides the time).
    pub fn from_checkout(binary: &Path) -> Result<Input> {
        let root = walship_testkit::workspace_root();
        let git = |args: &[&str]| -> Result<String> {
            let out = Command::new("git")
                .args(args)
                .current_dir(&root)
                .output()
                .context("running git")?;
            ensure!(
                out.status.success(),
                "git {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        };
        let mut revision = git(&["rev-parse", "HEAD"])?;
        if !git(&["status", "--porcelain", "--untracked-files=no"])?.is_empty() {
            revision.push_str("-dirty");
        }
        let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(value) => value
                .parse()
                .with_context(|| format!("SOURCE_DATE_EPOCH={value:?}: expected seconds"))?,
            Err(_) => git(&["log", "-1", "--format=%ct"])?
                .parse()
                .context("the commit's time")?,
        };
        Ok(Input {
            binary: binary.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            revision,
            epoch,
        })
    }
}

/// A built image archive.
#[derive(Debug, Clone)]
pub struct Image {
    pub path: PathBuf,
    pub tag: String,
    /// The manifest's digest (`sha256:…`): the image's identity.
    pub digest: String,
    /// The compressed layer: what a node pulls.
    pub layer_bytes: u64,
    /// The unpacked root filesystem's files.
    pub unpacked_bytes: u64,
}

impl Image {
    pub fn summary(&self) -> String {
        format!(
            "image {} (tag {}): {}, {:.1} MB to pull, {:.1} MB unpacked",
            self.path.display(),
            self.tag,
            self.digest,
            self.layer_bytes as f64 / 1e6,
            self.unpacked_bytes as f64 / 1e6
        )
    }
}

/// One file of the root filesystem.
enum Entry {
    File { mode: u32, data: Vec<u8> },
    Link { target: String },
}

/// Writes the image for `input` as an OCI image archive at `output`.
pub fn build(input: &Input, output: &Path) -> Result<Image> {
    let mut files: BTreeMap<String, Entry> = BTreeMap::new();
    let binary = fs::read(&input.binary)
        .with_context(|| format!("reading the binary {}", input.binary.display()))?;
    files.insert(
        BINARY.into(),
        Entry::File {
            mode: 0o755,
            data: binary,
        },
    );
    files.insert(
        MANAGER.into(),
        Entry::Link {
            target: format!("/{BINARY}"),
        },
    );
    for library in linked_libraries(&input.binary)? {
        let data = fs::read(&library)
            .with_context(|| format!("reading the library {}", library.display()))?;
        let name = library
            .strip_prefix("/")
            .expect("ldd gives absolute paths")
            .to_string_lossy()
            .into_owned();
        files.insert(name, Entry::File { mode: 0o755, data });
    }
    let ca_bundle = Path::new("/").join(CA_BUNDLE);
    let ca = fs::read(&ca_bundle).with_context(|| {
        format!(
            "reading {} (install the ca-certificates package)",
            ca_bundle.display()
        )
    })?;
    files.insert(
        CA_BUNDLE.into(),
        Entry::File {
            mode: 0o644,
            data: ca,
        },
    );
    let text = |s: String| Entry::File {
        mode: 0o644,
        data: s.into_bytes(),
    };
    files.insert(
        "etc/passwd".into(),
        text(format!(
            "root:x:0:0:root:/root:/sbin/nologin\n\
             postgres:x:{USER}:{USER}:PostgreSQL:/var/lib/postgresql:/sbin/nologin\n"
        )),
    );
    files.insert(
        "etc/group".into(),
        text(format!("root:x:0:\npostgres:x:{USER}:\n")),
    );
    // glibc's resolver: /etc/hosts first, then DNS (Kubernetes mounts both files).
    files.insert(
        "etc/nsswitch.conf".into(),
        text("hosts: files dns\n".into()),
    );

    let unpacked_bytes = files
        .values()
        .map(|e| match e {
            Entry::File { data, .. } => data.len() as u64,
            Entry::Link { .. } => 0,
        })
        .sum();
    let layer_tar = layer(&files, input.epoch)?;
    let diff_id = sha256(&layer_tar);
    let mut gz = GzBuilder::new().write(Vec::new(), Compression::best());
    gz.write_all(&layer_tar)?;
    let layer_gz = gz.finish()?;

    let created = chrono::DateTime::from_timestamp(input.epoch, 0)
        .context("the image's time")?
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let labels = json!({
        "org.opencontainers.image.title": "walship",
        "org.opencontainers.image.description":
            "PostgreSQL WAL archiving, base backups and restores to S3, Azure Blob Storage \
             and Google Cloud Storage in barman-cloud's layout; a drop-in for the Barman \
             Cloud plugin's sidecar",
        "org.opencontainers.image.version": input.version,
        "org.opencontainers.image.revision": input.revision,
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.licenses": "Apache-2.0",
        "org.opencontainers.image.vendor": "walship",
    });
    let config = json!({
        "created": created,
        "architecture": oci_architecture()?,
        "os": "linux",
        "config": {
            "User": format!("{USER}:{USER}"),
            "Entrypoint": [format!("/{MANAGER}")],
            "Env": [
                "PATH=/usr/local/bin:/usr/bin:/bin",
                format!("SSL_CERT_FILE=/{CA_BUNDLE}"),
            ],
            "WorkingDir": "/",
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": "cargo xtask image"}],
    });
    let config = serde_json::to_vec(&config)?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": MEDIA_LAYER, "digest": sha256(&layer_gz), "size": layer_gz.len()}],
        "annotations": labels,
    }))?;
    let digest = sha256(&manifest);
    let tag = input.version.clone();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [{
            "mediaType": MEDIA_MANIFEST,
            "digest": digest,
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    }))?;

    // The archive is an OCI image layout in a tar: the blobs, index.json, oci-layout.
    let mut layout: BTreeMap<String, Entry> = BTreeMap::new();
    for blob in [&config, &manifest, &layer_gz] {
        let name = format!("blobs/sha256/{}", &sha256(blob)["sha256:".len()..]);
        layout.insert(
            name,
            Entry::File {
                mode: 0o644,
                data: blob.clone(),
            },
        );
    }
    layout.insert(
        "index.json".into(),
        Entry::File {
            mode: 0o644,
            data: index,
        },
    );
    layout.insert(
        "oci-layout".into(),
        text(r#"{"imageLayoutVersion":"1.0.0"}"#.into()),
    );
    let archive = self::layer(&layout, input.epoch)?;
    if let Some(dir) = output.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let partial = output.with_extension("partial");
    fs::write(&partial, archive).with_context(|| format!("writing {}", partial.display()))?;
    fs::rename(&partial, output).with_context(|| format!("writing {}", output.display()))?;
    Ok(Image {
        path: output.to_owned(),
        tag,
        digest,
        layer_bytes: layer_gz.len() as u64,
        unpacked_bytes,
    })
}

/// A tar of `files` (sorted, with their parent directories first), every entry owned
/// by 0:0 and timed at `epoch`.
fn layer(files: &BTreeMap<String, Entry>, epoch: i64) -> Result<Vec<u8>> {
    let mut dirs = std::collections::BTreeSet::new();
    for name in files.keys() {
        let mut parent = Path::new(name).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(format!("{}/", dir.display()));
            parent = dir.parent();
        }
    }
    let mut entries: Vec<(&str, Option<&Entry>)> =
        dirs.iter().map(|d| (d.as_str(), None)).collect();
    entries.extend(files.iter().map(|(name, e)| (name.as_str(), Some(e))));
    // Sorted by path, so a directory comes before what it holds.
    entries.sort_by(|a, b| a.0.trim_end_matches('/').cmp(b.0.trim_end_matches('/')));

    let mut tar = tar::Builder::new(Vec::new());
    for (name, entry) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(u64::try_from(epoch).context("a time before 1970")?);
        match entry {
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                tar.append_data(&mut header, name, std::io::empty())?;
            }
            Some(Entry::File { mode, data }) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(data.len() as u64);
                tar.append_data(&mut header, name, data.as_slice())?;
            }
            Some(Entry::Link { target }) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                tar.append_link(&mut header, name, target)?;
            }
        }
    }
    Ok(tar.into_inner()?)
}

/// The shared libraries `binary` loads, the dynamic loader included, as `ldd` names
/// them; none for a static binary.
fn linked_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd (glibc's libc-bin)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stdout.contains("not a dynamic executable")
            || stderr.contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        bail!("ldd {}: {stderr}", binary.display());
    }
    let mut libraries = Vec::new();
    for line in stdout.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)", or the loader
        // "/lib64/ld-linux-x86-64.so.2 (0x…)"; the vDSO has no file.
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.trim(),
            None => line.trim(),
        };
        let path = path.split(" (").next().unwrap_or_default().trim();
        if path.starts_with('/') {
            libraries.push(PathBuf::from(path));
        } else if line.contains("not found") {
            bail!("{}: a library is missing: {line}", binary.display());
        }
    }
    Ok(libraries)
}

fn oci_architecture() -> Result<&'static str> {
    Ok(match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => bail!("no OCI name for the architecture {other}"),
    })
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Child, Output, Stdio};
    use std::time::{Duration, Instant};

    use walship_testkit::{S3Server, WalshipBin};

    use super::*;

    const TAG: &str = "0.0.0-test";

    fn input() -> Input {
        Input {
            binary: WalshipBin::path().unwrap(),
            version: TAG.into(),
            revision: "0123456789abcdef".into(),
            epoch: 1_764_547_200,
        }
    }

    fn skopeo_inspect(image: &Image, config: bool) -> serde_json::Value {
        let mut cmd = Command::new("skopeo");
        cmd.arg("inspect");
        if config {
            cmd.arg("--config");
        }
        let out = cmd
            .arg(format!(
                "oci-archive:{}:{}",
                image.path.display(),
                image.tag
            ))
            .output()
            .expect("skopeo (Debian's skopeo package; .ci/run installs it)");
        assert!(
            out.status.success(),
            "skopeo inspect: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    #[test]
    fn the_image_built_twice_has_one_digest_and_skopeo_reads_its_user_entrypoint_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        let first = build(&input(), &dir.path().join("first.oci.tar")).unwrap();
        let second = build(&input(), &dir.path().join("second.oci.tar")).unwrap();
        assert_eq!(first.digest, second.digest);
        assert_eq!(
            fs::read(&first.path).unwrap(),
            fs::read(&second.path).unwrap(),
            "the archives differ byte for byte"
        );
        // The time is in the image: a later commit is another image.
        let later = Input {
            epoch: input().epoch + 1,
            ..input()
        };
        let third = build(&later, &dir.path().join("third.oci.tar")).unwrap();
        assert_ne!(first.digest, third.digest);

        let inspected = skopeo_inspect(&first, false);
        assert_eq!(inspected["Digest"], first.digest.as_str());
        assert_eq!(inspected["Os"], "linux");
        assert_eq!(inspected["Architecture"], oci_architecture().unwrap());
        let labels = &inspected["Labels"];
        assert_eq!(labels["org.opencontainers.image.version"], TAG);
        assert_eq!(
            labels["org.opencontainers.image.revision"],
            "0123456789abcdef"
        );
        assert_eq!(
            labels["org.opencontainers.image.created"],
            "2025-12-01T00:00:00Z"
        );
        assert_eq!(labels["org.opencontainers.image.title"], "walship");
        assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
        assert_eq!(inspected["Layers"].as_array().unwrap().len(), 1);

        let config = skopeo_inspect(&first, true);
        assert_eq!(config["config"]["User"], "26:26");
        assert_eq!(config["config"]["Entrypoint"], json!(["/manager"]));
        assert!(first.layer_bytes > 0 && first.layer_bytes < first.unpacked_bytes);
    }

    /// The unpacked image's root filesystem, and a way to run commands in it as
    /// Kubernetes would: read-only, as the image's user, with volumes bound in.
    struct Root {
        _dir: tempfile::TempDir,
        rootfs: PathBuf,
    }

    impl Root {
        fn unpack(image: &Image, work: &Path) -> Root {
            let dir = tempfile::tempdir_in(work).unwrap();
            // The archive is an OCI layout in a tar; umoci reads the layout.
            let layout = dir.path().join("layout");
            tar::Archive::new(fs::File::open(&image.path).unwrap())
                .unpack(&layout)
                .unwrap();
            let bundle = dir.path().join("bundle");
            let out = Command::new("umoci")
                .args(["unpack", "--rootless", "--image"])
                .arg(format!("{}:{}", layout.display(), image.tag))
                .arg(&bundle)
                .output()
                .expect("umoci (Debian's umoci package; .ci/run installs it)");
            assert!(
                out.status.success(),
                "umoci unpack: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Root {
                rootfs: bundle.join("rootfs"),
                _dir: dir,
            }
        }

        /// `args` run in the image: its root bound read-only, `volumes` (host
        /// directory, path in the image) writable, as user 26:26 when the tests run
        /// as root (else as the caller, mapped to root in a user namespace).
        fn command(&self, volumes: &[(&Path, &str)], args: &[&str]) -> Command {
            let mut script = String::from("set -e\nR=$1; shift\nmount --bind \"$R\" \"$R\"\n");
            let mut positional = vec![self.rootfs.display().to_string()];
            for (host, inner) in volumes {
                // A runtime makes the mount points; here the test does, before the
                // root becomes read-only.
                fs::create_dir_all(self.rootfs.join(inner.trim_start_matches('/'))).unwrap();
                script.push_str(&format!("mount --bind \"$1\" \"$R{inner}\"\nshift\n"));
                positional.push(host.display().to_string());
            }
            // A runtime gives every container /proc (the binary finds itself there).
            fs::create_dir_all(self.rootfs.join("proc")).unwrap();
            script.push_str("mount -o remount,bind,ro \"$R\"\nmount -t proc proc \"$R/proc\"\n");
            let root = unsafe { libc::geteuid() } == 0;
            if root {
                script.push_str(&format!(
                    "exec chroot --userspec={USER}:{USER} \"$R\" \"$@\"\n"
                ));
            } else {
                script.push_str("exec chroot \"$R\" \"$@\"\n");
            }
            let mut cmd = Command::new("unshare");
            if !root {
                cmd.args(["--user", "--map-root-user"]);
            }
            // A PID namespace of its own, as a container has, for its /proc.
            cmd.args([
                "--mount",
                "--propagation",
                "private",
                "--pid",
                "--fork",
                "--kill-child",
                "sh",
                "-c",
                &script,
                "sh",
            ])
            .args(&positional)
            .args(args)
            .env_clear();
            cmd
        }

        fn run(&self, volumes: &[(&Path, &str)], args: &[&str]) -> Output {
            self.command(volumes, args).output().unwrap()
        }
    }

    /// A directory the image's user can write.
    fn volume(parent: &Path, name: &str) -> PathBuf {
        let dir = parent.join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        dir
    }

    /// A command running in the image, stopped as a kubelet stops a container when
    /// dropped: SIGTERM to the command itself (unshare does not forward it, and the
    /// change of user cleared --kill-child's parent-death signal), SIGKILL after 30 s.
    struct Running(Option<Child>);

    impl Running {
        fn stop(mut self) -> Output {
            let mut child = self.0.take().unwrap();
            terminate(&mut child);
            child.wait_with_output().unwrap()
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            if let Some(mut child) = self.0.take() {
                terminate(&mut child);
            }
        }
    }

    fn terminate(child: &mut Child) {
        let children = format!("/proc/{0}/task/{0}/children", child.id());
        for pid in fs::read_to_string(children)
            .unwrap_or_default()
            .split_whitespace()
        {
            unsafe { libc::kill(pid.parse().unwrap(), libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
    }

    fn text(out: &Output) -> String {
        format!(
            "{}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    #[test]
    fn the_binary_runs_from_the_unpacked_image_alone_on_a_read_only_root_as_user_26() {
        let work = tempfile::tempdir().unwrap();
        fs::set_permissions(work.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let image = build(&input(), &work.path().join("walship.oci.tar")).unwrap();
        let root = Root::unpack(&image, work.path());

        // `--version` through the image's own loader and libraries.
        let out = root.run(&[], &["/usr/local/bin/walship", "--version"]);
        assert!(out.status.success(), "{}", text(&out));
        let expected = Command::new(WalshipBin::path().unwrap())
            .arg("--version")
            .output()
            .unwrap();
        assert_eq!(out.stdout, expected.stdout);

        // Every command deploy/standalone runs in the image is there and takes its
        // arguments.
        let manifest = walship_testkit::workspace_root().join("deploy/standalone/statefulset.yaml");
        let set: serde_json::Value =
            serde_saphyr::from_str(&fs::read_to_string(manifest).unwrap()).unwrap();
        let inits = set["spec"]["template"]["spec"]["initContainers"]
            .as_array()
            .unwrap();
        let commands: Vec<Vec<&str>> = inits
            .iter()
            .filter(|c| c["image"].as_str().unwrap().contains("/walship:"))
            .map(|c| {
                let command = c["command"].as_array().unwrap().iter();
                command.map(|a| a.as_str().unwrap()).collect()
            })
            .collect();
        assert_eq!(commands.len(), 2, "{inits:?}");
        for command in commands {
            let out = root.run(&[], &[command.as_slice(), &["--help"]].concat());
            assert!(out.status.success(), "{command:?}: {}", text(&out));
        }

        // An init container's copy for PostgreSQL's container (deploy/standalone),
        // which then runs it with its own libraries.
        let bin = volume(work.path(), "bin");
        let out = root.run(
            &[(bin.as_path(), "/opt/walship")],
            &["/usr/local/bin/walship", "copy-to", "/opt/walship"],
        );
        assert!(out.status.success(), "{}", text(&out));
        let copied = Command::new(bin.join("walship"))
            .arg("--version")
            .output()
            .unwrap();
        assert_eq!(copied.stdout, expected.stdout);
        assert!(!bin.join(".walship.partial").exists());

        // `check` against the S3 server, the ObjectStore and its Secret at the
        // binary's default paths, as deploy/ mounts them.
        let s3 = S3Server::start().unwrap();
        s3.create_bucket("image-check").unwrap();
        let config = volume(work.path(), "config");
        let secrets = volume(work.path(), "secrets");
        fs::write(
            config.join("objectstore.yaml"),
            format!(
                "apiVersion: barmancloud.cnpg.io/v1\nkind: ObjectStore\nmetadata:\n  name: store\n\
                 spec:\n  configuration:\n    destinationPath: s3://image-check/\n    \
                 endpointURL: {}\n    serverName: image\n    s3Credentials:\n      \
                 accessKeyId: {{name: creds, key: ACCESS_KEY_ID}}\n      \
                 secretAccessKey: {{name: creds, key: ACCESS_SECRET_KEY}}\n",
                s3.endpoint()
            ),
        )
        .unwrap();
        let creds = volume(&secrets, "creds");
        fs::write(creds.join("ACCESS_KEY_ID"), s3.access_key()).unwrap();
        fs::write(creds.join("ACCESS_SECRET_KEY"), s3.secret_key()).unwrap();
        let etc = [
            (config.as_path(), "/etc/walship/config"),
            (secrets.as_path(), "/etc/walship/secrets"),
        ];
        let mut check = root.command(&etc, &["/usr/local/bin/walship", "check"]);
        check.env("WALSHIP_CONFIG", "/etc/walship/config/objectstore.yaml");
        let out = check.output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("empty"),
            "{}",
            text(&out)
        );
        // A wrong key is refused: the check talks to the server.
        fs::write(creds.join("ACCESS_SECRET_KEY"), "not-the-key").unwrap();
        let out = check.output().unwrap();
        assert!(!out.status.success(), "{}", text(&out));
        fs::write(creds.join("ACCESS_SECRET_KEY"), s3.secret_key()).unwrap();

        // The startup probe CloudNativePG runs, with no sidecar yet: not serving.
        let plugins = volume(work.path(), "plugins");
        let probe = [(plugins.as_path(), "/plugins")];
        let out = root.run(&probe, &["/manager", "healthcheck", "unix"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));

        // The sidecar itself, from the image, with CloudNativePG's volumes.
        let data = volume(work.path(), "data");
        let pgdata = volume(&data, "pgdata");
        volume(&pgdata, "pg_wal/archive_status");
        let run = volume(work.path(), "run");
        let controller = volume(work.path(), "controller");
        let mut volumes = etc.to_vec();
        volumes.extend([
            (plugins.as_path(), "/plugins"),
            (data.as_path(), "/var/lib/postgresql/data"),
            (run.as_path(), "/run"),
            (controller.as_path(), "/controller"),
        ]);
        let mut sidecar = root.command(
            &volumes,
            &[
                "/manager",
                "instance",
                "--config-from",
                "files",
                "--metrics-addr",
                "127.0.0.1:0",
            ],
        );
        sidecar
            .env("WALSHIP_CONFIG", "/etc/walship/config/objectstore.yaml")
            .env("POD_NAME", "image-1")
            .env("CLUSTER_NAME", "image")
            .env("PGDATA", "/var/lib/postgresql/data/pgdata")
            .env("SPOOL_DIRECTORY", "/controller/wal-restore-spool")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let sidecar = Running(Some(sidecar.spawn().unwrap()));
        let deadline = Instant::now() + Duration::from_secs(30);
        let serving = loop {
            let out = root.run(&probe, &["/manager", "healthcheck", "unix"]);
            if out.status.success() || Instant::now() > deadline {
                break out;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let log = sidecar.stop();
        assert!(
            serving.status.success(),
            "probe: {}\nsidecar: {}",
            text(&serving),
            text(&log)
        );
        // SIGTERM stops it cleanly, as a pod's termination does.
        assert!(log.status.success(), "sidecar: {}", text(&log));
    }
}
