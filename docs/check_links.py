"""Resolve every markdown link and anchor (GitHub heading slugs) in README.md and docs/*.md: python3 docs/check_links.py"""
import pathlib
import re
import sys

root = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parent.parent
files = [root / 'README.md', *sorted((root / 'docs').glob('*.md'))]

def slug(h):
    h = re.sub(r'<[^>]+>', '', h.strip()).lower()
    out = []
    for ch in h:
        if ch in ' -':
            out.append('-' if ch == ' ' else ch)
        elif ch == '_' or ch.isalnum():
            out.append(ch)
    return ''.join(out)

def strip_code(text):
    text = re.sub(r'^```.*?^```', '', text, flags=re.S | re.M)
    return text

def anchors(path):
    seen, result = {}, set()
    fence = False
    for line in path.read_text(encoding='utf-8').split('\n'):
        if line.startswith('```'):
            fence = not fence
            continue
        if fence:
            continue
        m = re.match(r'^(#{1,6})\s+(.*)', line)
        if m:
            s = slug(m.group(2))
            n = seen.get(s, 0)
            seen[s] = n + 1
            result.add(s if n == 0 else f'{s}-{n}')
    return result

bad = n = 0
for f in files:
    text = strip_code(f.read_text(encoding='utf-8'))
    text = re.sub(r'`[^`\n]*`', '', text)
    for m in re.finditer(r'!?\[(?:[^\]]|\n)*?\]\(([^)\s]+)\)', text):
        target = m.group(1)
        n += 1
        if re.match(r'[a-z]+:', target):
            continue
        path, _, frag = target.partition('#')
        dest = (f.parent / path).resolve() if path else f
        if not dest.exists():
            print(f'{f}: missing file {target}')
            bad += 1
            continue
        if frag and dest.suffix == '.md' and frag not in anchors(dest):
            print(f'{f}: missing anchor {target}')
            bad += 1
print(f'{n} links checked, {bad} broken')
sys.exit(1 if bad else 0)
