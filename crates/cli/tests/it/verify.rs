//! `run --live kube` with the Fleet's signature policy: an unsigned head is refused with the
//! reason, a head signed by an allowed SSH key is rolled out. `plan --live` judges the heads
//! as the controller does.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use endstate_agent::AgentConfig;
use endstate_api::Fleet;
use endstate_api::k8s_openapi::ByteString;
use endstate_api::k8s_openapi::api::core::v1::Secret;
use endstate_sim::Faults;
use endstate_testenv::TestServer;
use kube::Api;
use kube::api::{Patch, PostParams};

use crate::kill::{start, wait, write_fleet};
use crate::support::{git, kube_namespace, remote_and_clone};

#[test]
fn the_signature_policy_refuses_unsigned_heads_and_applies_signed_ones() {
    let (runtime, client, ns) = kube_namespace("verify");
    let server = TestServer::shared();
    let (dir, remote, work) = remote_and_clone("verify");
    let state = dir.join("state");
    let key = dir.join("signer");
    let keygen = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "release@example.com",
            "-f",
        ])
        .arg(&key)
        .status()
        .expect("ssh-keygen must be installed");
    assert!(keygen.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let commit = |message: &str, signed: bool| {
        git(&work, &["add", "-A"]);
        let signing = format!("user.signingkey={}", key.display());
        let mut args = vec![
            "-c",
            "user.name=Dev",
            "-c",
            "user.email=dev@example.com",
            "-c",
            "gpg.format=ssh",
            "-c",
            &signing,
            "commit",
            "-q",
            "-m",
            message,
        ];
        if signed {
            args.push("-S");
        }
        git(&work, &args);
        git(&work, &["push", "-q", "-f", "origin", "HEAD"]);
        git(&work, &["rev-parse", "HEAD"])
    };

    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("signers".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "release.pub".to_owned(),
            ByteString(public.into_bytes()),
        )])),
        ..Default::default()
    };
    runtime
        .block_on(
            Api::<Secret>::namespaced(client.clone(), &ns).create(&PostParams::default(), &secret),
        )
        .unwrap();
    let fleet: Fleet = serde_json::from_value(serde_json::json!({
        "apiVersion": "fleet.endstate.dev/v1alpha1", "kind": "Fleet",
        "metadata": {"name": "f", "namespace": ns},
        "spec": {"source": {"url": format!("file://{}", remote.display()), "branch": "main",
                            "verify": {"mode": "ssh", "secretRef": {"name": "signers"}}}}
    }))
    .unwrap();
    runtime
        .block_on(
            Api::<Fleet>::namespaced(client.clone(), &ns).create(&PostParams::default(), &fleet),
        )
        .unwrap();

    // Unsigned: refused with the reason, nothing applied.
    write_fleet(&work, "agent-1.0");
    let unsigned = commit("The fleet, unsigned", false);
    let log = dir.join("unsigned.log");
    let mut run = start(server.kubeconfig(), &ns, &state, &log);
    let code = wait(&mut run, Duration::from_secs(120));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains(&unsigned[..10]) || text.contains(&unsigned),
        "{text}"
    );
    assert!(
        text.to_lowercase().contains("unsigned") || text.contains("not signed"),
        "{text}"
    );
    let machines = runtime
        .block_on(
            Api::<endstate_api::Machine>::namespaced(client.clone(), &ns).list(&Default::default()),
        )
        .unwrap();
    assert!(
        machines.items.is_empty(),
        "nothing is applied from an unverified commit"
    );

    // Signed by the allowed key: rolled out.
    let agent = runtime.spawn(endstate_agent::run(
        client.clone(),
        AgentConfig::fixed(ns.clone(), Duration::from_millis(200), Faults::none()),
    ));
    std::fs::write(work.join("README"), "signed from here on\n").unwrap();
    commit("Sign the fleet", true);
    let log = dir.join("signed.log");
    let mut run = start(server.kubeconfig(), &ns, &state, &log);
    let code = wait(&mut run, Duration::from_secs(120));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, 0, "{text}");
    agent.abort();

    // `plan --live` makes the controller's checks of its branch's head.
    let kubeconfig = server.kubeconfig().display().to_string();
    let live = [
        "--live",
        "--fleet",
        "f",
        "--namespace",
        &ns,
        "--kubeconfig",
        &kubeconfig,
    ];
    let plan = |extra: &[&str]| crate::plan::json_plan(&[&live[..], extra].concat());
    let kinds = |report: &serde_json::Value| -> Vec<(String, bool)> {
        report["risks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["kind"].as_str().unwrap().to_owned(), r["refused"] == true))
            .collect()
    };
    let (code, signed) = plan(&[]);
    assert_eq!((code, kinds(&signed)), (0, vec![]), "{signed}");
    // An unsigned pull request: a merge commit may be signed on its own, so it is a risk.
    git(&work, &["checkout", "-q", "-b", "feature"]);
    write_fleet(&work, "agent-2.0");
    let feature = commit("Upgrade the agent, unsigned", false);
    let (code, report) = plan(&["--head", "feature"]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["head"], feature.trim(), "{report}");
    assert!(
        kinds(&report).contains(&("Unverified".to_owned(), false)),
        "{report}"
    );
    // The same commit as the Fleet's branch head is refused, as `run` refuses it.
    git(&work, &["checkout", "-q", "main"]);
    git(&work, &["merge", "-q", "--ff-only", "feature"]);
    git(&work, &["push", "-q", "origin", "main"]);
    let (code, report) = plan(&[]);
    assert_eq!(
        (code, report["outcome"].as_str()),
        (2, Some("Refused")),
        "{report}"
    );
    assert_eq!(report["risks"][0]["kind"], "Unverified", "{report}");
    assert!(
        report["risks"][0]["message"]
            .as_str()
            .unwrap()
            .contains("not applied"),
        "{report}"
    );
    // A branch rewritten past the last applied commit, even signed, is refused.
    git(&work, &["reset", "-q", "--hard", "HEAD~2"]);
    write_fleet(&work, "agent-2.0");
    let rewritten = commit("Upgrade the agent on another history", true);
    let (code, report) = plan(&[]);
    assert_eq!(
        (code, report["head"].as_str()),
        (2, Some(rewritten.trim())),
        "{report}"
    );
    assert_eq!(
        kinds(&report),
        vec![("HistoryRewritten".to_owned(), true)],
        "{report}"
    );
    // The Fleet's own policy decides: one that adopts rewrites plans the new history.
    let fleets = Api::<Fleet>::namespaced(client.clone(), &ns);
    let set_rewrites = |policy: &str| {
        let patch = serde_json::json!({"spec": {"source": {"onHistoryRewrite": policy}}});
        runtime
            .block_on(fleets.patch("f", &Default::default(), &Patch::Merge(&patch)))
            .unwrap();
    };
    set_rewrites("adopt");
    let (code, report) = plan(&[]);
    assert_eq!((code, kinds(&report)), (1, vec![]), "{report}");
    // A policy the controller cannot read is an error of the plan too, saying where.
    set_rewrites("sometimes");
    let (code, stdout, stderr) =
        crate::support::outcome(&crate::support::endstate(&[&["plan"][..], &live].concat()));
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!("Fleet {ns}/f: spec.source"))
            && stderr.contains("onHistoryRewrite \"sometimes\": expected `refuse` or `adopt`"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
