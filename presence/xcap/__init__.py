"""Privacy rules (pres-rules, common-policy) and XCAP documents."""
