"""The web dashboard: server-rendered pages over the public REST APIs.

It logs in through the identity API and keeps the token in a sealed session
cookie (:mod:`.session`); every page asks the public identity, compute,
image and network APIs with that token (:mod:`.client`), so a user sees
exactly what the API lets them see. It never reaches the database (an
import-linter contract says so). ``docs/dashboard.md`` describes it.
"""
