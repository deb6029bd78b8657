#!/usr/bin/env bash
# Checks the one-way import rule of architecture.md §2: node/* leaves and blobs import no
# component; repo < relay < appview < web, each importing only those before it; nothing
# imports package node but main. Test files are not checked (tests may use any helper).
set -euo pipefail
mod=$(go list -m)
rank() {
	case "$1" in
	"$mod"/node/*) echo leaf ;;
	"$mod"/blobs*) echo blobs ;;
	"$mod"/repo*) echo 1 ;;
	"$mod"/relay*) echo 2 ;;
	"$mod"/appview*) echo 3 ;;
	"$mod"/web*) echo 4 ;;
	"$mod"/node) echo node ;;
	"$mod") echo main ;;
	*) echo external ;;
	esac
}
bad=0
while read -r pkg imports; do
	from=$(rank "$pkg")
	for imp in $imports; do
		to=$(rank "$imp")
		[ "$to" = external ] && continue
		ok=1
		case "$from:$to" in
		main:*) ;;
		node:*) ;;
		*:node | *:main) ok=0 ;;
		leaf:leaf) ;;
		leaf:* | blobs:[0-9]) ok=0 ;;
		blobs:*) ;;
		[0-9]:leaf | [0-9]:blobs) ;;
		[0-9]:[0-9]) [ "${to}" -lt "${from}" ] || [ "$pkg" = "$imp" ] || ok=0
			# sub-packages of one component may import each other
			[ "${to}" = "${from}" ] && ok=1 ;;
		esac
		if [ $ok = 0 ]; then
			echo "import rule: $pkg must not import $imp (architecture.md §2)" >&2
			bad=1
		fi
	done
done < <(go list -f '{{.ImportPath}} {{join .Imports " "}}' ./...)
exit $bad
