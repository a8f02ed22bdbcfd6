#[cfg(test)]
mod t {
    #[test]
    fn exp() {
        for y in ["a: yes\nb: 0x10\nc: ~\nd: 1.0\ne: 010\nf: '5'\ng: -3\nh: True\ni: null\n", "a: [1\n", "a: 1\na: 2\n", "a:\n  b: 1\n c: 2\n", "", "---\na: 1\n---\nb: 2\n", "- 1\n- 2\n", "a: &x {k: 1}\nb: *x\nc:\n  <<: *x\n  z: 2\n", "a: 'unterminated\n", "key: value\n\tbad: tab\n"] {
            let r: Result<serde_json::Value, _> = serde_saphyr::from_str(y);
            match r {
                Ok(v) => println!("OK {v}"),
                Err(e) => println!("ERR display=<<{e}>> loc={:?}", e.location()),
            }
        }
    }
}
