"""The vocabulary and rules of rotation: values, records, policy, errors and ports. No I/O."""
