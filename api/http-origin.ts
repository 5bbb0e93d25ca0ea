// One way to name a host and port as an http:// origin: an IPv6 address goes in brackets (RFC
// 3986 §3.2.2), or neither WHATWG URL parsing nor undici, http2.connect or a browser would read it.

export function httpOrigin(host: string, port: number): string {
  return host.includes(":") ? `http://[${host}]:${port}` : `http://${host}:${port}`;
}
