//! The verdict of `status` and the findings it is made of.

use serde::Serialize;

/// The first line of `status`, and its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Everything read says the orders are being cancelled: exit 0.
    Ok,
    /// Something read says orders are, or will be, cancelled late or not at all: exit 1.
    Degraded,
    /// Nothing says degraded, but a fact that decides it could not be read (a server or a
    /// worker did not answer): exit 1, since a monitor cannot call that healthy.
    Unknown,
}

impl Verdict {
    /// 0 for `ok`, 1 otherwise, as monitoring checks (`queue:monitor`, Nagios-style probes)
    /// read an exit status.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::Degraded | Self::Unknown => 1,
        }
    }

    /// `ok`, `degraded` or `unknown`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Degraded => "degraded",
            Self::Unknown => "unknown",
        }
    }
}

/// What the facts found wrong, each one short and naming where.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    degraded: Vec<String>,
    unknown: Vec<String>,
}

impl Findings {
    /// A fact that says orders are cancelled late, or not at all.
    pub(crate) fn degraded(&mut self, reason: String) {
        self.degraded.push(reason);
    }

    /// A fact that decides the verdict and could not be read.
    pub(crate) fn unknown(&mut self, reason: String) {
        self.unknown.push(reason);
    }

    /// The verdict and its reasons: what degrades first, then what could not be read.
    pub(crate) fn verdict(self) -> (Verdict, Vec<String>) {
        let verdict = if !self.degraded.is_empty() {
            Verdict::Degraded
        } else if !self.unknown.is_empty() {
            Verdict::Unknown
        } else {
            Verdict::Ok
        };
        let mut reasons = self.degraded;
        reasons.extend(self.unknown);
        (verdict, reasons)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_degrades_wins_over_what_cannot_be_read() {
        assert_eq!(Findings::default().verdict(), (Verdict::Ok, vec![]));
        let mut findings = Findings::default();
        findings.unknown("a".into());
        findings.degraded("b".into());
        assert_eq!(
            findings.verdict(),
            (Verdict::Degraded, vec!["b".to_string(), "a".to_string()])
        );
        let mut findings = Findings::default();
        findings.unknown("a".into());
        assert_eq!(findings.verdict().0, Verdict::Unknown);
        assert_eq!(Verdict::Ok.exit_code(), 0);
        assert_eq!(Verdict::Unknown.exit_code(), 1);
    }
}
