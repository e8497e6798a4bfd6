#!/bin/sh
[ "$(./calc.sh mul 4 5)" = 20 ]
