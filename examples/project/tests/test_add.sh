#!/bin/sh
[ "$(./calc.sh add 2 3)" = 5 ]
