# A web process for the benchmarks: nginx on $PORT answering every request
# with "release $GRAVEN_RELEASE" (so each answer says which release gave
# it), fast enough that what is measured is whatever stands in front of it.
# Its files go to $TMPDIR.
set -e
d=${TMPDIR:-/tmp}
cat >"$d/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $d/nginx.pid;
error_log stderr error;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $d/body;
    proxy_temp_path $d/proxy;
    fastcgi_temp_path $d/fastcgi;
    uwsgi_temp_path $d/uwsgi;
    scgi_temp_path $d/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server { listen 127.0.0.1:$PORT; location / { return 200 "release $GRAVEN_RELEASE\n"; } }
}
EOF
exec nginx -c "$d/nginx.conf"
