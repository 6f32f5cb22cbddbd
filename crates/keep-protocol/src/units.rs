//! Quantities as admins write them on the command line: byte sizes and
//! rates with K/M/G/T suffixes (powers of 1024, as rclone's `--bwlimit`).
//! Used as clap value parsers, so a bad value is a usage error naming the flag;
//! and Go durations (`336h`), as flags and Arvados config files write them.

/// Parse a size like `256M`, `1.5G`, `800k`, `1000000` (bytes; K/M/G/T are
/// powers of 1024; a trailing `B` or `iB` is allowed).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix(['B', 'b']))
        .unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some(c) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown unit in {s:?}: use K, M, G or T")),
            };
            (&t[..t.len() - 1], m)
        }
        _ => (t, 1),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size: write e.g. 256M for 256 MiB"))?;
    if !(n.is_finite() && n >= 0.0) || n * mult as f64 > u64::MAX as f64 / 2.0 {
        return Err(format!("{s:?} is not a sensible size"));
    }
    Ok((n * mult as f64) as u64)
}

/// Parse a rate like `50M`, `1.5G`, `800k`, `1000000` (bytes per second, an
/// optional `/s`). `0` or `off` = no limit.
pub fn parse_rate(s: &str) -> Result<Option<u64>, String> {
    let t = s.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("off") || t == "0" {
        return Ok(None);
    }
    let t = t.strip_suffix("/s").unwrap_or(t);
    match parse_size(t) {
        Ok(0) => Err(format!("rate {s:?} must be positive")),
        Ok(n) => Ok(Some(n)),
        Err(_) => Err(format!("{s:?} is not a rate: write e.g. 50M for 50 MiB/s")),
    }
}

/// A byte budget flag's value: a size of at least 1 MiB.
pub fn parse_budget(s: &str) -> Result<u64, String> {
    let n = parse_size(s)?;
    if n < 1 << 20 {
        return Err(format!("{s:?} is too small: give at least 1M"));
    }
    Ok(n)
}

/// Parse a Go duration (`336h`, `1209600s`, `2h45m`, `1.5h`, `300ms`, `0`).
pub fn parse_go_duration(s: &str) -> Result<std::time::Duration, String> {
    let orig = s;
    let bad = || {
        format!("{orig:?} is not a duration: write it as Go does, e.g. 336h, 1209600s, 2h45m or 0")
    };
    let s = s.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.starts_with('-') {
        return Err(format!("{orig:?}: a duration here cannot be negative"));
    }
    if s == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        if num_len == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .bytes()
            .take_while(|b| !b.is_ascii_digit() && *b != b'.')
            .count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let mult = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * mult;
    }
    if !total.is_finite() || total > 1e12 {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_rates() {
        assert_eq!(parse_size("256M").unwrap(), 256 << 20);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-1M").is_err());
        assert!(parse_size("5X").is_err());
        assert_eq!(parse_rate("50M").unwrap(), Some(50 << 20));
        assert_eq!(parse_rate("1.5k").unwrap(), Some(1536));
        assert_eq!(parse_rate("1000").unwrap(), Some(1000));
        assert_eq!(parse_rate("off").unwrap(), None);
        assert_eq!(parse_rate("10MB/s").unwrap(), Some(10 << 20));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("-5M").is_err());
        assert!(parse_budget("512k").is_err());
        assert_eq!(parse_budget("1G").unwrap(), 1 << 30);
    }
}
