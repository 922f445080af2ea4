// A correction to smtp-server, loaded by the servers built on it (the local ingress and the
// embedded target). Its DATA parser looks for line-start dots from index 2 of the first chunk,
// so when DATA starts with a bare LF and a dot-stuffed line ("\n..x") the stuffing dot is kept
// and "\n...x" is stored. Here that one dot is removed before the parser sees it. Found by the
// corpus (test/corpus, case dot-after-bare-lf-at-start), which keeps checking it; drop this
// file once smtp-server fixes SMTPStream._feedDataStream.

interface DataParser {
  _atDataStart?: boolean;
  _lastBytes?: Buffer | false;
  _feedDataStream(chunk: Buffer, done: () => void): void;
}

const LF = 0x0a;
const DOT = 0x2e;
const spec = 'smtp-server/lib/smtp-stream.js';  // a string: the package ships no types for it
const mod: unknown = await import(spec);
const proto = (mod as { SMTPStream?: { prototype?: DataParser } }).SMTPStream?.prototype;
const original = proto?._feedDataStream;

if (proto && typeof original === 'function') {
  proto._feedDataStream = function feedDataStream(this: DataParser, chunk: Buffer, done: () => void): void {
    if (this._atDataStart) {
      const view = this._lastBytes && this._lastBytes.length ? Buffer.concat([this._lastBytes, chunk]) : chunk;
      if (view.length >= 3 && view[0] === LF && view[1] === DOT && view[2] === DOT) {
        this._lastBytes = false;
        original.call(this, Buffer.concat([view.subarray(0, 1), view.subarray(2)]), done);
        return;
      }
    }
    original.call(this, chunk, done);
  };
} else {
  // A newer smtp-server changed its internals: the corpus test tells whether it still needs this.
  process.emitWarning('smtp-server internals changed: the leading-dot correction is not applied', 'MailbridgeWarning');
}

export {};
