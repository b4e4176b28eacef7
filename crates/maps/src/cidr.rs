//! `cidr:` (cidr_table(5)) — IPv4 and IPv6 networks, first match wins.
//!
//! ```text
//! 192.168.0.0/16      result
//! 10.1.2.3            result          (a host)
//! 2001:db8::/32       result          (IPv6, optionally in [brackets])
//! !10.0.0.0/8         result          (matches addresses outside the network)
//! if 192.168.0.0/16   ... endif       (nesting, negation with if !net)
//! ```
//!
//! Bad rules are skipped with Postfix's warnings (`non-null host address bits`, `bad
//! address pattern`, `bad net/mask pattern`, `no lookup result`). A key that is not an
//! IP address matches nothing. An IPv4 address never matches an IPv6 rule and vice versa
//! (`::ffff:1.2.3.4` is IPv6), as in Postfix.

use crate::text::LogicalLines;
use crate::{Map, MapError, MatchKind};
use std::io::BufReader;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy)]
struct Net {
    addr: u128,
    mask: u128,
    v6: bool,
}

impl Net {
    fn contains(&self, a: &IpAddr) -> bool {
        let (v, v6) = match a {
            IpAddr::V4(a) => (u128::from(u32::from(*a)), false),
            IpAddr::V6(a) => (u128::from(*a), true),
        };
        v6 == self.v6 && (v & self.mask) == self.addr
    }

    /// Whether a rule applies: same address family, and inside the network xor negated
    /// (a negated IPv4 rule never matches an IPv6 address, as in Postfix).
    fn applies(&self, a: &IpAddr, negate: bool) -> bool {
        a.is_ipv6() == self.v6 && self.contains(a) != negate
    }
}

fn parse_addr(s: &str) -> Option<IpAddr> {
    let s = s
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(s);
    s.parse().ok()
}

/// Parses `addr[/len]`; `Err` is Postfix's warning text.
fn parse_net(p: &str) -> Result<Net, String> {
    let (a, len) = match p.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (p, None),
    };
    let Some(ip) = parse_addr(a) else {
        return Err(if len.is_some() {
            format!("bad net/mask pattern: \"{p}\": skipping this rule")
        } else {
            format!("bad address pattern: \"{p}\": skipping this rule")
        });
    };
    let (v, bits, v6) = match ip {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32u32, false),
        IpAddr::V6(a) => (u128::from(a), 128u32, true),
    };
    let len = match len {
        None => bits,
        Some(l) => match l.parse::<u32>() {
            Ok(n) if n <= bits && !l.starts_with('+') => n,
            _ => return Err(format!("bad net/mask pattern: \"{p}\": skipping this rule")),
        },
    };
    let full: u128 = if bits == 32 {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    };
    let mask = if len == 0 {
        0
    } else {
        (full << (bits - len)) & full
    };
    if v & !mask & full != 0 {
        let net = v & mask;
        let shown = if v6 {
            std::net::Ipv6Addr::from(net).to_string()
        } else {
            std::net::Ipv4Addr::from(net as u32).to_string()
        };
        return Err(format!(
            "non-null host address bits in \"{p}\", perhaps you should use \"{shown}/{len}\" instead: skipping this rule"
        ));
    }
    Ok(Net { addr: v, mask, v6 })
}

enum Rule {
    Match {
        net: Net,
        negate: bool,
        result: String,
    },
    If {
        net: Net,
        negate: bool,
        end: usize,
    },
    Endif,
}

/// A loaded `cidr:` table.
pub struct CidrMap {
    rules: Vec<Rule>,
    warnings: Vec<String>,
}

/// Splits `[!]pattern rest`.
fn pattern(s: &str) -> (bool, &str, &str) {
    let mut p = s;
    let mut negate = false;
    while let Some(r) = p.strip_prefix('!') {
        negate = !negate;
        p = r.trim_start();
    }
    let end = p.find(|c: char| c.is_ascii_whitespace()).unwrap_or(p.len());
    (negate, &p[..end], p[end..].trim())
}

impl CidrMap {
    pub fn open(path: &str) -> Result<CidrMap, MapError> {
        let f =
            std::fs::File::open(path).map_err(|e| MapError::temp(format!("open {path}: {e}")))?;
        Self::load(BufReader::new(f), path)
    }

    /// Loads a table from text (`path` names it in warnings).
    pub fn load<R: std::io::BufRead>(input: R, path: &str) -> Result<CidrMap, MapError> {
        let mut rules = Vec::new();
        let mut warnings = Vec::new();
        let mut open_ifs: Vec<(usize, usize)> = Vec::new();
        for l in LogicalLines::new(input) {
            let l = l.map_err(|e| MapError::temp(format!("read {path}: {e}")))?;
            let mut warn = |w: String| {
                warnings.push(format!("cidr map {path}, line {}: {w}", l.line));
            };
            let text = l.text.trim();
            let word = text
                .split(|c: char| c.is_ascii_whitespace())
                .next()
                .unwrap_or("");
            if word.eq_ignore_ascii_case("if") {
                let (negate, p, extra) = pattern(text[2..].trim_start());
                if !extra.is_empty() {
                    warn(format!(
                        "ignoring extra text after IF statement: \"{extra}\""
                    ));
                }
                match parse_net(p) {
                    Err(w) => warn(w),
                    Ok(net) => {
                        open_ifs.push((rules.len(), l.line));
                        rules.push(Rule::If {
                            net,
                            negate,
                            end: usize::MAX,
                        });
                    }
                }
                continue;
            }
            if word.eq_ignore_ascii_case("endif") {
                match open_ifs.pop() {
                    None => warn("ignoring ENDIF without matching IF".into()),
                    Some((idx, _)) => {
                        let end = rules.len() + 1;
                        if let Some(Rule::If { end: e, .. }) = rules.get_mut(idx) {
                            *e = end;
                        }
                        rules.push(Rule::Endif);
                    }
                }
                continue;
            }
            let (negate, p, result) = pattern(text);
            let net = match parse_net(p) {
                Ok(n) => n,
                Err(w) => {
                    warn(w);
                    continue;
                }
            };
            if result.is_empty() {
                warn("no lookup result: skipping this rule".into());
                continue;
            }
            rules.push(Rule::Match {
                net,
                negate,
                result: result.to_string(),
            });
        }
        while let Some((idx, line)) = open_ifs.pop() {
            warnings.push(format!(
                "cidr map {path}, line {line}: IF has no matching ENDIF"
            ));
            let end = rules.len();
            if let Some(Rule::If { end: e, .. }) = rules.get_mut(idx) {
                *e = end;
            }
        }
        Ok(CidrMap { rules, warnings })
    }
}

impl Map for CidrMap {
    fn lookup(&self, key: &str) -> Result<Option<String>, MapError> {
        let Ok(addr) = key.parse::<IpAddr>() else {
            return Ok(None);
        };
        let mut i = 0;
        while i < self.rules.len() {
            match &self.rules[i] {
                Rule::Endif => i += 1,
                Rule::If { net, negate, end } => {
                    i = if net.applies(&addr, *negate) {
                        i + 1
                    } else {
                        *end
                    };
                }
                Rule::Match {
                    net,
                    negate,
                    result,
                } => {
                    if net.applies(&addr, *negate) {
                        return Ok(Some(result.clone()));
                    }
                    i += 1;
                }
            }
        }
        Ok(None)
    }

    fn match_kind(&self) -> MatchKind {
        MatchKind::Pattern
    }

    fn folds_case(&self) -> bool {
        false
    }

    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_negation_and_nesting() {
        let src = "1.2.3.4/16 bad\n1.2.0.0/16 net16\n::1 v6lo\n[2001:db8::]/32 doc\n\
                   !10.0.0.0/8 notten\nfoo bar\n1.2.3.5\nif 192.168.0.0/16\n\
                   192.168.1.0/24 inner\nendif\n0.0.0.0/0 any\n";
        let m = CidrMap::load(src.as_bytes(), "c").expect("load");
        let q = |k: &str| m.lookup(k).ok().flatten();
        assert_eq!(q("1.2.9.9").as_deref(), Some("net16"));
        assert_eq!(q("::1").as_deref(), Some("v6lo"));
        assert_eq!(q("2001:DB8::5").as_deref(), Some("doc"));
        assert_eq!(q("192.168.1.7").as_deref(), Some("notten"));
        assert_eq!(q("10.1.1.1").as_deref(), Some("any"));
        assert_eq!(q("bogus"), None);
        let w = m.warnings();
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].contains("perhaps you should use \"1.2.0.0/16\" instead"));
        assert!(w[1].contains("bad address pattern: \"foo\""));
        assert!(w[2].contains("no lookup result"));
    }
}
