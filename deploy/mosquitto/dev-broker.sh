#!/bin/sh
# Development broker with the production config: a throw-away CA and server certificate,
# random passwords for the users inspector, gate, plc, viewer, admin, spc and scada (OUT_DIR/passwords.txt,
# "user:password" lines), the shipped mosquitto.conf and acl resolved to OUT_DIR, TLS on
# TLS_PORT and no plain listener. Runs Mosquitto in the foreground.
#
#   deploy/mosquitto/dev-broker.sh /tmp/broker 8883
set -eu
if [ $# -ne 2 ]; then
  echo "usage: $0 OUT_DIR TLS_PORT" >&2
  exit 2
fi
OUT=$1
PORT=$2
HERE=$(cd "$(dirname "$0")" && pwd)
for tool in openssl mosquitto_passwd; do
  command -v "$tool" >/dev/null 2>&1 || { echo "$0: $tool not found (apt-get install -y openssl mosquitto)" >&2; exit 2; }
done
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$OUT"

# Certificates: a CA, and a server certificate for localhost / 127.0.0.1 / this host.
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=inspector dev CA" \
  -keyout ca.key -out ca.crt 2>/dev/null
cat > server.ext <<EXT
subjectAltName=DNS:localhost,IP:127.0.0.1,DNS:$(hostname)
extendedKeyUsage=serverAuth
EXT
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
  -extfile server.ext -out server.crt 2>/dev/null

# Users and random passwords.
: > passwords
: > passwords.txt
for user in inspector gate plc viewer admin spc scada; do
  pw=$(openssl rand -hex 12)
  mosquitto_passwd -b passwords "$user" "$pw"
  echo "$user:$pw" >> passwords.txt
done
cp "$HERE/acl" acl
chmod 600 passwords.txt ca.key

# The shipped config, resolved to OUT_DIR: TLS on PORT, no plain listener.
sed -e "s#/etc/mosquitto/inspector/#$OUT/#g" \
    -e "s#^persistence_location .*#persistence_location $OUT/#" \
    -e "/^listener 1883 127.0.0.1/d" \
    -e "s#^listener 8883#listener $PORT#" \
    "$HERE/mosquitto.conf" > mosquitto.conf
# As root, Mosquitto switches to the 'mosquitto' user, who could not read OUT_DIR.
if [ "$(id -u)" = 0 ]; then echo "user root" >> mosquitto.conf; fi

echo "dev broker: TLS on port $PORT, CA $OUT/ca.crt, passwords in $OUT/passwords.txt" >&2
exec "$MOSQUITTO" -c "$OUT/mosquitto.conf"
