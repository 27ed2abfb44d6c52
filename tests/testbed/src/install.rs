//! `deploy/kubernetes/overlays/example` filled in the way `docs/install.md` tells an operator
//! to: a copy of the directory with the image names, the Heketi URL and user edited and the
//! Heketi admin key written into `heketi-admin-key`. The manifest checks (`tests/tests/deploy.rs`)
//! and the real-Kubernetes suite (`tests/tests/k8s_e2e.rs`) install from such a copy, so the
//! steps of the guide are the steps the tests take.

use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, ensure};

use crate::k8s::repo_dir;

/// The overlay an operator copies, relative to the repository.
pub const EXAMPLE_OVERLAY: &str = "deploy/kubernetes/overlays/example";
/// The file of the overlay that holds the Heketi admin key; not in the repository.
pub const KEY_FILE: &str = "heketi-admin-key";
/// The registry path the committed overlay names as a placeholder.
pub const PLACEHOLDER_REGISTRY: &str = "registry.example.com/storage";
/// The image tag the committed overlay names.
pub const PLACEHOLDER_TAG: &str = "v0.1.0";

/// What an operator fills in.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Registry path the images were pushed to (`localhost` for images loaded into the node).
    pub registry: String,
    /// Image tag.
    pub tag: String,
    /// The default backend's Heketi URL.
    pub heketi_url: String,
    /// The Heketi user of the key.
    pub heketi_user: String,
    /// The Heketi admin key.
    pub heketi_key: String,
}

/// Copies the example overlay to `dest` (replacing what is there) and fills it in with
/// `settings`; returns `dest`. Fails when a placeholder the guide tells the operator to replace
/// is not in the committed overlay (the guide and the overlay disagree).
pub fn fill_example_overlay(dest: &Path, settings: &Settings) -> Result<PathBuf> {
    let src = repo_dir().join(EXAMPLE_OVERLAY);
    if dest.exists() {
        std::fs::remove_dir_all(dest).with_context(|| format!("removing {}", dest.display()))?;
    }
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    for entry in std::fs::read_dir(&src).with_context(|| format!("reading {}", src.display()))? {
        let path = entry?.path();
        if path.is_file() {
            let name = path.file_name().context("file without a name")?;
            std::fs::copy(&path, dest.join(name))
                .with_context(|| format!("copying {}", path.display()))?;
        }
    }

    // kustomization.yaml: the base where the copy can reach it, the operator's images.
    let file = dest.join("kustomization.yaml");
    let mut text = std::fs::read_to_string(&file)?;
    let base = relative_path(dest, &repo_dir().join("deploy/kubernetes/base"))?;
    text = replace_all(&text, "- ../../base\n", &format!("- {}\n", base.display()))?;
    text = replace_all(&text, PLACEHOLDER_REGISTRY, &settings.registry)?;
    text = replace_all(
        &text,
        &format!("newTag: {PLACEHOLDER_TAG}"),
        &format!("newTag: {}", settings.tag),
    )?;
    std::fs::write(&file, text)?;

    // heketi.env: the default backend.
    let file = dest.join("heketi.env");
    let text = std::fs::read_to_string(&file)?;
    let mut seen = (false, false);
    let filled: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("HEKETI_URL=") {
                seen.0 = true;
                format!("HEKETI_URL={}", settings.heketi_url)
            } else if l.starts_with("HEKETI_USER=") {
                seen.1 = true;
                format!("HEKETI_USER={}", settings.heketi_user)
            } else {
                l.to_owned()
            }
        })
        .collect();
    ensure!(
        seen == (true, true),
        "{EXAMPLE_OVERLAY}/heketi.env has no HEKETI_URL= or HEKETI_USER= line"
    );
    std::fs::write(&file, filled.join("\n") + "\n")?;

    // The key, readable by its owner only.
    let key = dest.join(KEY_FILE);
    std::fs::write(&key, &settings.heketi_key)?;
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(dest.to_path_buf())
}

fn replace_all(text: &str, from: &str, to: &str) -> Result<String> {
    ensure!(
        text.contains(from),
        "{EXAMPLE_OVERLAY}/kustomization.yaml no longer contains {from:?}"
    );
    Ok(text.replace(from, to))
}

/// `to` as seen from the directory `from` (kustomize refuses absolute resource paths).
pub fn relative_path(from: &Path, to: &Path) -> Result<PathBuf> {
    let from = std::fs::canonicalize(from).with_context(|| format!("{}", from.display()))?;
    let to = std::fs::canonicalize(to).with_context(|| format!("{}", to.display()))?;
    let a: Vec<Component> = from.components().collect();
    let b: Vec<Component> = to.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..a.len() {
        out.push("..");
    }
    for c in &b[common..] {
        out.push(c.as_os_str());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_climb_to_the_common_ancestor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("x/y");
        let b = dir.path().join("z");
        std::fs::create_dir_all(&a).expect("mkdir");
        std::fs::create_dir_all(&b).expect("mkdir");
        assert_eq!(
            relative_path(&a, &b).expect("relative"),
            PathBuf::from("../../z")
        );
        assert_eq!(
            relative_path(&b, &a).expect("relative"),
            PathBuf::from("../x/y")
        );
    }
}
