//! Credentials over HTTP basic authentication, and a sentinel credential that must never
//! appear in an error, a status or a log line.

use endstate_git::{Credentials, FailureKind, History, Secret, Source, SourceConfig};

use crate::support::{HttpGit, Repo, assert_fetch_failed, capture_logs};

const SENTINEL: &str = "SENTINEL-c0ffee-credential-4242";

#[test]
fn fetches_over_http_with_basic_authentication() {
    let repo = Repo::new();
    let http = HttpGit::serve(repo.dir.path(), "fleet-bot", "right-password");
    let credentials = Credentials {
        username: Some("fleet-bot".into()),
        password: Some(Secret::new("right-password")),
        ..Default::default()
    };
    let config = SourceConfig::new(http.url("remote.git"), repo.mirror()).credentials(credentials);
    let fetched = Source::open(config, History::default())
        .unwrap()
        .fetch()
        .unwrap();
    assert_eq!(fetched.commit, repo.remote_head());
}

#[test]
fn a_sentinel_credential_never_appears_in_errors_status_or_logs() {
    let repo = Repo::new();
    let http = HttpGit::serve(repo.dir.path(), "fleet-bot", "right-password");
    let mut shown = String::new();
    let (_, logs) = capture_logs(|| {
        // Refused credentials, as a password and as a token.
        for credentials in [
            Credentials {
                username: Some("fleet-bot".into()),
                password: Some(Secret::new(SENTINEL)),
                ..Default::default()
            },
            Credentials {
                token: Some(Secret::new(SENTINEL)),
                ..Default::default()
            },
        ] {
            let config = SourceConfig::new(http.url("remote.git"), repo.dir.path().join("m1"))
                .credentials(credentials.clone());
            let mut source = Source::open(config.clone(), History::default()).unwrap();
            let err = source.fetch().unwrap_err();
            assert_fetch_failed(&err, FailureKind::Auth, "authentication failed");
            shown += &format!(
                "{err}\n{err:?}\n{source:?}\n{:?}\n{config:?}\n{credentials:?}\n",
                source.status()
            );
        }
        // The sentinel written into the URL, against an unreachable and a reachable remote.
        for url in [
            format!(
                "http://fleet-bot:{SENTINEL}@127.0.0.1:{}/remote.git",
                crate::support::free_port()
            ),
            format!(
                "http://fleet-bot:{SENTINEL}@127.0.0.1:{}/remote.git",
                http.port
            ),
        ] {
            let config = SourceConfig::new(url, repo.dir.path().join("m2"));
            let mut source = Source::open(config, History::default()).unwrap();
            let err = source.fetch().unwrap_err();
            shown += &format!("{err}\n{err:?}\n{source:?}\n{:?}\n", source.status());
        }
    });
    assert!(!shown.is_empty() && !logs.is_empty());
    assert!(logs.contains("fetch failed"), "{logs}");
    assert!(
        !shown.contains(SENTINEL),
        "the sentinel leaked into an error or status:\n{shown}"
    );
    assert!(
        !logs.contains(SENTINEL),
        "the sentinel leaked into the logs:\n{logs}"
    );
}
