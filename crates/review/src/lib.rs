//! endstate's review of a change: what merging a head would do to the fleet, for the people
//! (and programs) who review it — the report of `endstate plan`.
//!
//! ```text
//!   Facts: head's objects + policy, base's objects, live objects, budgets spent, now
//!     │
//!     ├── plan(facts) ──▶ Plan ──▶ (the caller's admission checks: refusals as Risks)
//!     ▼
//!   review(subject, facts, plan, found)
//!     summary ─▶ blast_radius ─▶ policy ─▶ risks (refusals first) ─▶ schedule ─▶ diffs
//!     ▼
//!   PlanReport ──▶ to_json (docs/plan.schema.json) · render_text · render_markdown
//! ```
//!
//! Pure: it reads no clock, file, repository or cluster. Whoever calls it resolves the
//! commits, renders them, reads the live Fleet and runs the admission checks, and hands the
//! results in; `now` is an argument. The same inputs give the same bytes.

mod blast_radius;
mod commit;
mod diffs;
mod facts;
mod markdown;
mod policy;
mod report;
mod review;
mod risk;
mod risks;
mod schedule;
mod summary;
mod text;

pub use facts::{Facts, plan};
pub use markdown::{CAP as MARKDOWN_CAP, render as render_markdown};
pub use report::{
    Against, BlastRadius, Budget, ClusterRadius, Count, Counts, Diff, Estimate, Outcome,
    PackageMove, PlanReport, Problem, Subject, Summary, VERSION, Wave, schema,
};
pub use review::{invalid, review};
pub use risk::{Risk, RiskKind};
pub use text::render as render_text;
