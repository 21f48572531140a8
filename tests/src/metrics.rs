//! Prometheus text-format scraping helpers.

/// One sample: metric name, labels, value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parse the Prometheus text exposition format (comments skipped).
pub fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, labels, rest) = if let Some(brace) = line.find('{') {
            let name = &line[..brace];
            let Some(close) = line.rfind('}') else {
                continue;
            };
            (
                name.to_string(),
                parse_labels(&line[brace + 1..close]),
                &line[close + 1..],
            )
        } else {
            let mut it = line.splitn(2, char::is_whitespace);
            let name = it.next().unwrap_or_default();
            (name.to_string(), Vec::new(), it.next().unwrap_or_default())
        };
        let value_str = rest.split_whitespace().next().unwrap_or("");
        let value = match value_str {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => match v.parse::<f64>() {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b',' || b[i] == b' ') {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let key = s[ks..i].trim().to_string();
        i += 1; // '='
        if i >= b.len() || b[i] != b'"' {
            break;
        }
        i += 1;
        let mut val = String::new();
        while i < b.len() && b[i] != b'"' {
            if b[i] == b'\\' && i + 1 < b.len() {
                i += 1;
                val.push(match b[i] {
                    b'n' => '\n',
                    c => c as char,
                });
            } else {
                // labels are ASCII in practice; keep multi-byte chars intact
                let ch = s[i..].chars().next().unwrap_or('?');
                val.push(ch);
                i += ch.len_utf8() - 1;
            }
            i += 1;
        }
        i += 1; // closing quote
        out.push((key, val));
    }
    out
}

/// Sum of all series of `name` whose labels include every pair of `want`.
pub fn sum(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    parse(text)
        .into_iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            want.iter()
                .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|s| s.value)
        .sum()
}

/// Whether a metric family `name` appears (as a sample or in `# TYPE`/`# HELP`).
pub fn has_family(text: &str, name: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim();
        if let Some(rest) = l
            .strip_prefix("# TYPE ")
            .or_else(|| l.strip_prefix("# HELP "))
        {
            return rest.split_whitespace().next() == Some(name);
        }
        let n = l
            .split(|c: char| c == '{' || c.is_whitespace())
            .next()
            .unwrap_or("");
        n == name
            || (n.starts_with(name) && matches!(&n[name.len()..], "_bucket" | "_sum" | "_count"))
    })
}

/// The label keys used by the samples of a family (union).
pub fn label_keys(text: &str, name: &str) -> Vec<String> {
    let mut keys: Vec<String> = parse(text)
        .into_iter()
        .filter(|s| {
            s.name == name
                || s.name == format!("{name}_bucket")
                || s.name == format!("{name}_count")
        })
        .flat_map(|s| s.labels.into_iter().map(|(k, _)| k))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_sum() {
        let t = "# TYPE x counter\nx{a=\"1\",b=\"q\\\"z\"} 3\nx{a=\"2\"} 4\ny 5\nh_bucket{le=\"+Inf\",api=\"o\"} 7\n";
        assert_eq!(sum(t, "x", &[]), 7.0);
        assert_eq!(sum(t, "x", &[("a", "1")]), 3.0);
        assert_eq!(sum(t, "x", &[("b", "q\"z")]), 3.0);
        assert_eq!(sum(t, "y", &[]), 5.0);
        assert!(has_family(t, "h"));
        assert_eq!(
            label_keys(t, "h"),
            vec!["api".to_string(), "le".to_string()]
        );
    }
}
