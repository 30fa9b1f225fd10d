/** Free ports, only for programs that cannot listen on port 0 themselves; see devtools/ports.ts. */
export { findFreePort } from '../../devtools';
