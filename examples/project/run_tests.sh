#!/bin/sh
# Runs every tests/test_*.sh and writes report/results.txt (one line each) and report/summary.
mkdir -p report
passed=0
failed=0
: > report/results.txt
for test in tests/test_*.sh; do
    if sh "$test"; then
        echo "PASS $test" >> report/results.txt
        passed=$((passed + 1))
    else
        echo "FAIL $test" >> report/results.txt
        failed=$((failed + 1))
    fi
done
echo "$passed passed, $failed failed" > report/summary
[ "$failed" = 0 ]
