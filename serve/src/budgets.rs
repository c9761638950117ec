use dmpo_infer::{ExitPolicy, ModelInfo};

use crate::ServeError;

/// The budgets a request may ask for: every one calibrated in the model folder (fractions of the
/// backbone's MACs; above 1 where adapters and heads cost more than they save), plus full depth,
/// each with its exit thresholds; one of them is the default.
#[derive(Debug, Clone)]
pub struct Budgets {
    /// `(fraction, thresholds)`, calibrated ones ascending, then full depth (`None`).
    entries: Vec<(Option<f64>, ExitPolicy)>,
    default: usize,
}

impl Budgets {
    /// The model's calibrated budgets; `default`: the one a request naming none runs at
    /// (`None`: the model's own default, or full depth if it has none). Each policy is checked
    /// against the model's exits here, so a bad model folder fails at start, not per request.
    pub fn new(info: &ModelInfo, default: Option<f64>) -> Result<Self, ServeError> {
        let exits = info.dmpo.exits.len();
        let mut entries = Vec::new();
        for f in info.budget_fractions() {
            let policy = info.budget_policy(f).expect("a listed budget has a policy");
            policy
                .validate(exits)
                .map_err(|e| ServeError::Model(format!("budget {f}: {e}")))?;
            entries.push((Some(f), policy.clone()));
        }
        let mut full = ExitPolicy::full_depth(exits);
        if let Some((_, p)) = entries.first() {
            full.criterion = p.criterion;
        }
        entries.push((None, full));
        let mut budgets = Self {
            entries,
            default: 0,
        };
        budgets.default = match default.or(info.budget_fraction) {
            Some(f) => budgets.find(f).ok_or_else(|| {
                ServeError::Config(format!(
                    "budget {f}: not calibrated for this model; it has {}",
                    budgets.list()
                ))
            })?,
            None => budgets.entries.len() - 1,
        };
        Ok(budgets)
    }

    fn find(&self, fraction: f64) -> Option<usize> {
        self.entries
            .iter()
            .position(|(f, _)| f.is_some_and(|f| (f - fraction).abs() < 1e-6))
    }

    /// The budget a request names (`None`: the default): a fraction such as `0.5`, a
    /// percentage such as `50%`, or `full`; its index, or a one-line reason.
    pub fn resolve(&self, requested: Option<&str>) -> Result<usize, String> {
        let Some(text) = requested.map(str::trim) else {
            return Ok(self.default);
        };
        if text.eq_ignore_ascii_case("full") {
            return Ok(self.entries.len() - 1);
        }
        let fraction = match text.strip_suffix('%') {
            Some(p) => p.trim().parse::<f64>().ok().map(|p| p / 100.0),
            None => text.parse::<f64>().ok(),
        };
        fraction.and_then(|f| self.find(f)).ok_or_else(|| {
            format!(
                "unknown budget '{text}': this model is calibrated for {}",
                self.list()
            )
        })
    }

    pub fn policy(&self, index: usize) -> &ExitPolicy {
        &self.entries[index].1
    }

    /// The budget's fraction; `None` for full depth.
    pub fn fraction(&self, index: usize) -> Option<f64> {
        self.entries[index].0
    }

    pub fn default_index(&self) -> usize {
        self.default
    }

    /// The calibrated fractions, ascending (full depth not included).
    pub fn fractions(&self) -> Vec<f64> {
        self.entries.iter().filter_map(|(f, _)| *f).collect()
    }

    /// Calibrated budgets and full depth.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `0.3, 0.5, full`.
    fn list(&self) -> String {
        self.entries
            .iter()
            .map(|(f, _)| f.map_or("full".into(), |f| format!("{f}")))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
