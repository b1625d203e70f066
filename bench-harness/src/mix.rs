//! The `k8s` workload's operation mix (`--mix get=30,list=5,...`): weights,
//! not percentages, so any integers work; an operation left out has weight 0.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum K8sOp {
    /// Linearizable Range of one object (the apiserver's quorum read).
    Get,
    /// A paginated list of one resource prefix: Range with limit, then
    /// continue from the last key at the first page's revision.
    List,
    /// Txn(mod_revision(key) == 0) then Put: the apiserver's create.
    Create,
    /// Txn(mod_revision(key) == last seen) then Put, else Get: its update,
    /// retried after a conflict with the revision just read.
    Update,
    /// Txn(mod_revision(key) == last seen) then DeleteRange of an object
    /// this client created.
    Delete,
    /// Put of an event attached to a lease, the lease reused for a number
    /// of events as the apiserver does.
    Event,
}

impl K8sOp {
    pub const ALL: [K8sOp; 6] = [
        K8sOp::Get,
        K8sOp::List,
        K8sOp::Create,
        K8sOp::Update,
        K8sOp::Delete,
        K8sOp::Event,
    ];

    pub fn name(self) -> &'static str {
        match self {
            K8sOp::Get => "get",
            K8sOp::List => "list",
            K8sOp::Create => "create",
            K8sOp::Update => "update",
            K8sOp::Delete => "delete",
            K8sOp::Event => "event",
        }
    }
}

/// Weights of the k8s operations, in [`K8sOp::ALL`] order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; 6],
}

/// Mostly reads and updates of existing objects, as an apiserver without
/// its watch cache would send: most of Kubernetes' etcd traffic is
/// GuaranteedUpdate (status updates, leader-election renewals) and events.
pub const K8S_MIX_DEFAULT: &str = "get=30,list=5,create=5,update=40,delete=5,event=15";
const WEIGHT_MAX: u32 = 1_000_000;

impl Default for Mix {
    fn default() -> Self {
        Mix::parse(K8S_MIX_DEFAULT).expect("the default mix parses")
    }
}

impl Mix {
    pub fn parse(s: &str) -> Result<Mix, String> {
        let mut weights = [0u32; 6];
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, w) = part
                .split_once('=')
                .ok_or_else(|| format!("--mix: {part:?} is not op=weight"))?;
            let i = K8sOp::ALL
                .iter()
                .position(|op| op.name() == name.trim())
                .ok_or_else(|| {
                    format!("--mix: unknown operation {name:?} (get, list, create, update, delete, event)")
                })?;
            let w: u32 = w
                .trim()
                .parse()
                .map_err(|_| format!("--mix: weight {w:?} of {name} is not a whole number"))?;
            if w > WEIGHT_MAX {
                return Err(format!("--mix: weight of {name} above {WEIGHT_MAX}"));
            }
            weights[i] = w;
        }
        if weights.iter().all(|&w| w == 0) {
            return Err("--mix: every weight is 0".into());
        }
        Ok(Mix { weights })
    }

    /// The operation for a uniformly random `r`.
    pub fn pick(&self, r: u64) -> K8sOp {
        let total: u64 = self.weights.iter().map(|&w| u64::from(w)).sum();
        let mut x = r % total;
        for (op, &w) in K8sOp::ALL.iter().zip(&self.weights) {
            if x < u64::from(w) {
                return *op;
            }
            x -= u64::from(w);
        }
        unreachable!("x < total = sum of the weights")
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = K8sOp::ALL
            .iter()
            .zip(&self.weights)
            .filter(|(_, &w)| w > 0)
            .map(|(op, w)| format!("{}={w}", op.name()))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// True with probability `ratio` for a uniformly random `r`
/// (`--read-ratio`, `--churn`).
pub fn chance(ratio: f64, r: u64) -> bool {
    const SCALE: u64 = 1 << 53;
    ((r >> 11) as f64) < ratio * SCALE as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let m = Mix::parse("get=3, update=1").unwrap();
        assert_eq!(m.to_string(), "get=3,update=1");
        assert_eq!(Mix::default().to_string(), K8S_MIX_DEFAULT);
        assert!(Mix::parse("get=0").is_err());
        assert!(Mix::parse("fetch=1").is_err());
        assert!(Mix::parse("get").is_err());
        assert!(Mix::parse("get=-1").is_err());
    }

    #[test]
    fn picks_follow_the_weights() {
        let m = Mix::parse("get=3,list=1,event=0").unwrap();
        let mut counts = [0u32; 6];
        for r in 0..4000u64 {
            let op = m.pick(r);
            counts[K8sOp::ALL.iter().position(|o| *o == op).unwrap()] += 1;
        }
        assert_eq!(counts, [3000, 1000, 0, 0, 0, 0]);
    }

    #[test]
    fn chance_is_a_ratio() {
        assert!(!chance(0.0, 0));
        assert!(chance(1.0, u64::MAX));
        let mut x = 88172645463325252u64;
        let mut hits = 0;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            hits += u32::from(chance(0.25, x));
        }
        assert!((24_000..26_000).contains(&hits), "{hits}");
    }
}
