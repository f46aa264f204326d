//! The category tree both sides agree on: `photos/ files/ videos/`, each holding
//! `personal/ work/ projects/` and any sub-categories users add below them, and the flat
//! name of a category path from the original plan (`photos/work/WebProject` →
//! `photo.01work.02WebProject`), exposed as the extended attribute [`CATEGORY_XATTR`].

/// The extended attribute that gives a file's or folder's flat category name.
pub const CATEGORY_XATTR: &str = "user.shelf.category";

/// The top-level category folders, by kind of content.
pub const KINDS: [&str; 3] = ["photos", "files", "videos"];

/// The second-level category folders every kind holds.
pub const AREAS: [&str; 3] = ["personal", "work", "projects"];

/// The flat name of the category a path (components from the store's root) lies in: the
/// kind in the singular, then each further folder numbered by depth. `None` outside the
/// category folders (the root, `shared/`, other top-level folders).
///
/// `["photos"]` → `photo`; `["photos", "work", "WebProject"]` → `photo.01work.02WebProject`.
pub fn flat_name<S: AsRef<str>>(folders: &[S]) -> Option<String> {
    let (top, rest) = folders.split_first()?;
    let kind = top.as_ref();
    if !KINDS.contains(&kind) {
        return None;
    }
    let mut flat = kind.trim_end_matches('s').to_string();
    for (depth, name) in rest.iter().enumerate() {
        flat.push_str(&format!(".{:02}{}", depth + 1, name.as_ref()));
    }
    Some(flat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_names_follow_the_original_plan() {
        assert_eq!(
            flat_name(&["photos", "work", "WebProject"]).as_deref(),
            Some("photo.01work.02WebProject")
        );
        assert_eq!(flat_name(&["videos"]).as_deref(), Some("video"));
        assert_eq!(
            flat_name(&["files", "personal"]).as_deref(),
            Some("file.01personal")
        );
        let deep: Vec<String> = ["files", "projects"]
            .iter()
            .map(|s| s.to_string())
            .chain((0..10).map(|i| format!("d{i}")))
            .collect();
        assert!(flat_name(&deep).unwrap().ends_with(".11d9"));
        assert_eq!(flat_name::<&str>(&[]), None);
        assert_eq!(flat_name(&["shared", "bob"]), None);
        assert_eq!(flat_name(&["notes"]), None);
    }
}
