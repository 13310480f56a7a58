//! Query strings: `a=1&b=x%2Cy` into decoded pairs.

use std::borrow::Cow;

/// A query string that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query parameter {0:?} is not valid percent-encoded UTF-8")]
pub struct QueryError(pub String);

/// Splits `query` into decoded `(name, value)` pairs (`+` is a space, as in forms).
pub fn pairs(
    query: &str,
) -> impl Iterator<Item = Result<(Cow<'_, str>, Cow<'_, str>), QueryError>> {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        Ok((decode(k)?, decode(v)?))
    })
}

/// Percent-decodes one component.
pub fn decode(s: &str) -> Result<Cow<'_, str>, QueryError> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Ok(Cow::Borrowed(s));
    }
    let bad = || QueryError(s.chars().take(64).collect());
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
                let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map(Cow::Owned).map_err(|_| bad())
}

/// A `limit` value: a whole number from 1 to `max`.
pub fn limit(v: &str, max: usize) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "limit must be a whole number from 1 to {max}, not {:?}",
            v.chars().take(32).collect::<String>()
        )),
    }
}

/// Refuses a query with a parameter not among `known`, or one given twice: on endpoints
/// whose answer the parameters change, a misspelt one ignored would change the answer
/// silently (`/spans/recent?trace=…` listing every span).
pub fn only(q: &str, known: &[&str]) -> Result<(), String> {
    let mut seen: Vec<Cow<'_, str>> = Vec::with_capacity(known.len());
    for pair in pairs(q) {
        let (name, _) = pair.map_err(|e| e.to_string())?;
        if !known.contains(&&*name) {
            return Err(format!(
                "unknown query parameter {:?}: this endpoint takes {}",
                name.chars().take(64).collect::<String>(),
                known.join(" and ")
            ));
        }
        if seen.contains(&name) {
            return Err(format!("query parameter {name:?} is given twice"));
        }
        seen.push(name);
    }
    Ok(())
}

/// The `limit` parameter of query string `q` (`default` when absent); other parameters are
/// the caller's to check ([`only`]).
pub fn limit_param(q: &str, default: usize, max: usize) -> Result<usize, String> {
    let mut out = default;
    for pair in pairs(q) {
        let (k, v) = pair.map_err(|e| e.to_string())?;
        if k == "limit" {
            out = limit(&v, max)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_pairs() {
        let v: Vec<_> = pairs("types=a.*%2Cb&x&y=1+2").map(Result::unwrap).collect();
        assert_eq!(v[0], ("types".into(), "a.*,b".into()));
        assert_eq!(v[1], ("x".into(), "".into()));
        assert_eq!(v[2], ("y".into(), "1 2".into()));
    }

    #[test]
    fn only_known_parameters_each_once() {
        let known = ["limit", "state"];
        assert_eq!(only("", &known), Ok(()));
        assert_eq!(only("state=ok&limit=3", &known), Ok(()));
        assert_eq!(
            only("limit=3&sate=ok", &known),
            Err("unknown query parameter \"sate\": this endpoint takes limit and state".into())
        );
        assert_eq!(
            only("limit=3&l%69mit=4", &known),
            Err("query parameter \"limit\" is given twice".into())
        );
        assert!(only("%zz=1", &known).is_err());
    }

    #[test]
    fn refuses_bad_escapes() {
        for bad in ["%", "%4", "%zz", "%ff", "%e9%"] {
            assert!(decode(bad).is_err(), "{bad}");
        }
        assert_eq!(decode("%C3%A9").unwrap(), "é");
    }
}
