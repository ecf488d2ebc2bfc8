//! How a commit is named to people: by the first characters of its id, as Git's own short
//! ids are (the controller's status and logs name it the same way).

/// The first ten characters of `commit`.
pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(10)]
}
