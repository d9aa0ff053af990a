"""A Zipkin-API-compatible development collector with a trace page: `python -m gateway_devtools.collector`
(gateway_devtools/collector/cli.py), or `create_collector_app()` (app.py) in a test.

Zipkin's v2 API (specs/zipkin2-api.yaml), so that the same client code works against a real Zipkin:

    POST   /api/v2/spans            JSON or protobuf ListOfSpans, optionally gzipped: 202, or 400 and a reason
    GET    /api/v2/trace/{traceId}  one trace, 404 when unknown
    GET    /api/v2/traces           serviceName, remoteServiceName, spanName, annotationQuery, minDuration,
                                    maxDuration, endTs, lookback, limit; newest first
    GET    /api/v2/traceMany        traceIds=a,b,...
    GET    /api/v2/services         local service names
    GET    /api/v2/spans            span names of ?serviceName=
    GET    /api/v2/remoteServices   remote service names of ?serviceName=

and, for tests and people:

    GET    /api/v2/_stats           counters: spans stored, received, duplicate, evicted; requests by outcome
    DELETE /api/v2/_reset           empty the store and zero the counters (POST works too)
    GET    /                        the trace page; `/#trace=<id>` opens one trace
    GET    /health                  {"status": "UP"}
"""
