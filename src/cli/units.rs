//! Human units on the command line: `--duration 10s`, `--rate 400k`. One parser per kind of
//! value, shared by every command, so `10`, `10s` and `10000ms` mean the same everywhere.

/// Seconds, from `10`, `2.5s`, `500ms`, `2m` (a bare number is seconds).
pub fn parse_seconds(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("expected a duration such as 10, 10s, 500ms or 2m, got '{s}'"))?;
    let secs = v * scale;
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("a duration must be zero or more, got '{s}'"));
    }
    Ok(secs)
}

/// A count per second, from `20000`, `400k`, `1.5M` (k = 1,000, M = 1,000,000).
pub fn parse_per_second(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix(['k', 'K']) {
        (n, 1e3)
    } else if let Some(n) = t.strip_suffix('M') {
        (n, 1e6)
    } else {
        (t, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("expected a rate such as 20000, 400k or 1.5M, got '{s}'"))?;
    let rate = v * scale;
    if !rate.is_finite() || rate <= 0.0 {
        return Err(format!("a rate must be positive, got '{s}'"));
    }
    Ok(rate)
}

/// `max`, or a rate as [`parse_per_second`] reads it (`None` for `max`).
pub fn parse_rate_or_max(s: &str) -> Result<Option<f64>, String> {
    if s.trim() == "max" {
        return Ok(None);
    }
    parse_per_second(s)
        .map(Some)
        .map_err(|e| format!("{e} (or 'max')"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_rates_take_units() {
        assert_eq!(parse_seconds("10").unwrap(), 10.0);
        assert_eq!(parse_seconds("10s").unwrap(), 10.0);
        assert_eq!(parse_seconds("500ms").unwrap(), 0.5);
        assert_eq!(parse_seconds("2m").unwrap(), 120.0);
        assert!(parse_seconds("-1s").is_err());
        assert!(parse_seconds("ten").is_err());
        assert_eq!(parse_per_second("400k").unwrap(), 400_000.0);
        assert_eq!(parse_per_second("1.5M").unwrap(), 1_500_000.0);
        assert_eq!(parse_per_second("20000").unwrap(), 20_000.0);
        assert!(parse_per_second("0").is_err());
        assert!(parse_per_second("fast").is_err());
        assert_eq!(parse_rate_or_max("max").unwrap(), None);
        assert_eq!(parse_rate_or_max("2M").unwrap(), Some(2e6));
        assert!(parse_rate_or_max("nan").is_err());
    }
}
