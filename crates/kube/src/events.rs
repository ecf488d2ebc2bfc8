//! Events on a Fleet (`kubectl describe fleet`, `kubectl events`): what its loop did and why it
//! refused, besides its status.

use endstate_api::Fleet;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::error::{Error, Result};

/// An Event's note is cut to this many characters (the API server refuses more than 1 kB).
const NOTE_CHARS: usize = 1000;

/// Publishes Events on one Fleet as `endstate`, one replica.
#[derive(Clone)]
pub struct FleetEvents {
    recorder: Recorder,
    reference: ObjectReference,
}

impl std::fmt::Debug for FleetEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetEvents")
            .field("reference", &self.reference)
            .finish_non_exhaustive()
    }
}

impl FleetEvents {
    /// Events on `fleet`, reported by the controller `endstate`, replica `instance`.
    pub fn new(client: kube::Client, instance: &str, fleet: &Fleet) -> FleetEvents {
        let reporter = Reporter {
            controller: "endstate".into(),
            instance: Some(instance.to_owned()),
        };
        FleetEvents {
            recorder: Recorder::new(client, reporter),
            reference: kube::Resource::object_ref(fleet, &()),
        }
    }

    /// Publishes an Event: a warning or a normal one, its reason, the action it is about and
    /// a note.
    pub async fn publish(
        &self,
        warning: bool,
        reason: &str,
        action: &str,
        note: &str,
    ) -> Result<()> {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(endstate_rollout::text::cut(note, NOTE_CHARS)),
            action: action.to_owned(),
            secondary: None,
        };
        self.recorder
            .publish(&event, &self.reference)
            .await
            .map_err(|source| Error::Request {
                what: format!(
                    "publishing the Event {reason} on Fleet {}/{}",
                    self.reference.namespace.as_deref().unwrap_or_default(),
                    self.reference.name.as_deref().unwrap_or_default()
                ),
                source: Box::new(source),
            })
    }
}
